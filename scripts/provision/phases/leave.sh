# shellcheck shell=bash
# leave: takes this node out of the cluster. The broker drains (clients are sent to other nodes,
# sessions stay in Redis) and stops; if this host holds the Redis primary, Sentinel moves it first;
# then Redis and Sentinel stop here and the other Sentinels forget this host. Leaving twice is a
# no-op. `configure` and `join` bring the node back.

readonly LEAVE_TIMEOUT=60

in_cluster() {
  fleetmq_cli cluster status --json --node "$(mgmt_node)" 2>/dev/null | "$(node_bin)" -e '
    const status = JSON.parse(require("fs").readFileSync(0, "utf8"))
    process.exit(status.cluster ? 0 : 1)'
}

leave_broker() {
  if ! systemctl is-active --quiet fleetmq.service; then
    log "fleetmq.service is not running"
  elif in_cluster; then
    step "draining this node and leaving the cluster"
    local output
    if ! output=$(fleetmq_cli cluster leave --node "$(mgmt_node)" 2>&1); then
      printf '%s\n' "$output" >&2
      die "fleetmq cluster leave failed (above); the node still serves"
    fi
    log "$output"
  fi
  # The node stops itself after leaving; stopping the unit keeps systemd from starting it again.
  if systemctl is-enabled --quiet fleetmq.service 2>/dev/null || systemctl is-active --quiet fleetmq.service; then
    systemctl disable --now --quiet fleetmq.service
    log "fleetmq.service stopped and disabled"
  fi
}

# Addresses of the other Sentinels monitoring the primary, as the local Sentinel knows them.
peer_sentinels() {
  sentinel_cli 127.0.0.1 --raw SENTINEL sentinels "$SENTINEL_MASTER" 2>/dev/null | awk 'previous == "ip" { print } { previous = $0 }' || true
}

primary_is_here() {
  local primary
  primary=$(sentinel_primary 127.0.0.1)
  [ -n "$primary" ] && is_local_address "$primary"
}

primary_moved() { ! primary_is_here; }

leave_redis() {
  if ! systemctl is-active --quiet redis-sentinel.service && ! systemctl is-active --quiet redis-server.service; then
    log "Redis and Sentinel are not running here"
    return
  fi
  local -a peers=()
  mapfile -t peers < <(peer_sentinels)
  if primary_is_here; then
    [ "${#peers[@]}" -gt 0 ] || die "this host holds the Redis primary and no other Sentinel knows the cluster; a last node cannot leave"
    step "moving the Redis primary to a replica (SENTINEL FAILOVER)"
    sentinel_cli 127.0.0.1 SENTINEL FAILOVER "$SENTINEL_MASTER" >/dev/null
    wait_for "$LEAVE_TIMEOUT" "Sentinel to move the Redis primary off this host" primary_moved
  fi
  step "stopping Redis and Sentinel here"
  systemctl disable --now --quiet redis-sentinel.service redis-server.service
  local peer
  for peer in "${peers[@]}"; do
    # RESET makes a Sentinel forget this host's replica and Sentinel; it rediscovers the others.
    if sentinel_cli "$peer" SENTINEL RESET "$SENTINEL_MASTER" >/dev/null 2>&1; then
      log "Sentinel at $peer forgot this host"
    else
      warn "Sentinel at $peer did not answer; it will list this host as down until it is reset"
    fi
  done
  # A later configure renders Redis and Sentinel afresh.
  rm -f "$STATE_DIR/redis-server.sha256" "$STATE_DIR/redis-sentinel.sha256"
}

phase_leave() {
  require_root
  [ -x "$OPT_DIR/current/bin/fleetmq" ] || die "FleetMQ is not installed here; nothing to leave"
  if [ -n "$ENV_FILE" ] && [ -f "$ENV_FILE" ]; then
    load_env "$ENV_FILE"
    check_provision_settings
  fi
  leave_broker
  leave_redis
  log "this node has left the cluster"
}
