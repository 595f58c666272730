# shellcheck shell=bash
# upgrade: installs another bundle beside the running one and restarts this node onto it. The old
# release stays in /opt/fleetmq for rollback; if the new one does not become ready, this node goes
# back to the old one, with the settings file it ran with, and the phase fails. Callers upgrade a
# cluster one node at a time.

# Releases kept in /opt/fleetmq: the current one and the newest others, for rollback.
readonly RELEASES_KEPT=3

prune_releases() {
  local current dir kept=0
  current=$(current_release)
  while IFS= read -r dir; do
    [ "$dir" = "$current" ] && continue
    kept=$((kept + 1))
    if [ "$kept" -ge "$RELEASES_KEPT" ]; then
      log "removing the old release $(basename "$dir")"
      rm -rf "$dir"
    fi
  done < <(find "$OPT_DIR" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
}

phase_upgrade() {
  require_root
  require_option "--bundle FILE (the new bundle)" "$BUNDLE_FILE"
  [ -x "$OPT_DIR/current/bin/fleetmq" ] || die "FleetMQ is not installed here; run install and configure first"
  local previous target
  previous=$(current_release)
  step "bundle"
  target=$(install_release "$BUNDLE_FILE")
  if [ "$previous" = "$target" ] && { [ "$(running_release)" = "$target" ] || ! systemctl is-active --quiet fleetmq.service; }; then
    log "release $(basename "$target") is already the current one"
    return
  fi
  step "switch to $(basename "$target")"
  # The settings file the old release runs with, kept until the new one is ready: a rollback puts
  # it back, so the old release never starts with the new release's settings.
  local config_before
  config_before=$(mktemp "$ETC_DIR/.fleetmq.yaml.before-upgrade.XXXXXX")
  cp -p "$ETC_DIR/fleetmq.yaml" "$config_before"
  point_current "$target"
  install_unit
  write_file "$ETC_DIR/fleetmq.yaml" 0640 "root:$FLEETMQ_USER" <"$OPT_DIR/current/config/fleetmq.yaml" || true
  if systemctl is-enabled --quiet fleetmq.service; then
    step "restart fleetmq.service"
    # SIGTERM drains: clients are told to go and sessions are flushed before the new release starts.
    # A release that exits at once can fail the restart job itself: that is "not ready" too, and
    # rolls back like one that never answers.
    systemctl restart fleetmq.service || warn "systemctl restart fleetmq.service failed with release $(basename "$target")"
    if ! broker_ready_within 90; then
      warn "rolling back to $(basename "$previous") and its settings file"
      point_current "$previous"
      install_unit
      write_file "$ETC_DIR/fleetmq.yaml" 0640 "root:$FLEETMQ_USER" <"$config_before" || true
      rm -f "$config_before"
      # The failed release's restarts may have used up systemd's start limit: clear it first.
      systemctl reset-failed fleetmq.service || true
      systemctl restart fleetmq.service || warn "systemctl restart fleetmq.service failed with release $(basename "$previous")"
      broker_ready_within 90 || warn "the previous release does not become ready either"
      die "release $(basename "$target") did not become ready; this node runs $(basename "$previous") again"
    fi
  fi
  rm -f "$config_before"
  step "old releases"
  prune_releases
  log "this node runs $(basename "$target"); $(basename "$previous") stays for rollback"
}
