# shellcheck shell=bash
# cleanup: removes every per-instance thing from a host that becomes an image, so that each machine
# started from it gets its own identity: SSH host keys (regenerated at first boot), authorized keys,
# known hosts, passwords, shell history, machine-id, DHCP leases, logs, cloud-init state, secrets
# (the secrets folder, the credentials file, the password lines of the Redis configs) and Redis
# identity.
# --root DIR cleans a mounted image instead of this system. On a running system, run validate --live
# right after it (see quiet_live_logging).

clean_ssh() {
  local R=$TARGET_ROOT
  rm -f "$R"/etc/ssh/ssh_host_*
  find "$R/root" "$R/home" "$R/etc/ssh" -name 'authorized_keys*' -type f -delete 2>/dev/null || true
  # The hosts the builder reached (a bastion, the other nodes): not every instance's business.
  find "$R/root" "$R/home" -path '*/.ssh/known_hosts*' -type f -delete 2>/dev/null || true
  rm -f "$R/etc/ssh/ssh_known_hosts"
  ensure_dir "$R/etc/ssh/sshd_config.d" 0755 root:root
  # 01-: sshd keeps the first value it reads, so this file wins over cloud-init's 50-cloud-init.conf.
  write_file "$R/etc/ssh/sshd_config.d/01-fleetmq-hardening.conf" 0644 root:root <<'SSHD' || true
# FleetMQ images: keys only, never passwords; root never logs in (admin has sudo).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
SSHD
}

# Every account keeps its entry but no password: '*' (no password can match).
clean_passwords() {
  local R=$TARGET_ROOT file=$TARGET_ROOT/etc/shadow
  if [ -f "$file" ]; then
    awk -F: 'BEGIN { OFS = ":" } $2 != "*" && $2 != "!" && $2 != "!*" && $2 != "!!" { $2 = "*" } { print }' "$file" |
      write_file "$file" 0640 "$(stat -c %u:%g "$file")" || true
  fi
  rm -f "$R/etc/shadow-" "$R/etc/gshadow-" "$R/etc/passwd-" "$R/etc/group-"
}

clean_identity() {
  local R=$TARGET_ROOT
  # An empty machine-id makes systemd generate a new one at first boot.
  if [ -s "$R/etc/machine-id" ]; then : >"$R/etc/machine-id"; fi
  if [ -f "$R/var/lib/dbus/machine-id" ] && [ ! -L "$R/var/lib/dbus/machine-id" ]; then rm -f "$R/var/lib/dbus/machine-id"; fi
  rm -f "$R/var/lib/systemd/random-seed"
  rm -rf "$R"/var/lib/cloud/*
  # The builder's DHCP leases (its address, its network's servers): each instance asks for its own.
  rm -f "$R"/var/lib/dhcp/*.leases "$R"/var/lib/dhcp/*.lease "$R"/var/lib/dhclient/*.lease*
  find "$R/root" "$R/home" -maxdepth 2 \( -name '.*_history' -o -name '.lesshst' -o -name '.viminfo' \) -type f -delete 2>/dev/null || true
}

# On a running system (an AMI build on a live instance) services keep logging while the image is
# taken. The journal goes to memory for the rest of this boot (a drop-in in /run, gone at the next
# boot, where the image's own setting applies again) and rsyslog stops, so that what cleanup
# empties stays empty. Services that write their own files (the SSM agent) are left running:
# validate --live names what they wrote after cleanup.
quiet_live_logging() {
  [ -z "$TARGET_ROOT" ] && systemd_running || return 0
  local dropin=/run/systemd/journald.conf.d/90-fleetmq-image.conf unit
  if [ ! -f "$dropin" ]; then
    ensure_dir "$(dirname "$dropin")" 0755 root:root
    printf '# fleetmq-provision cleanup: no persistent journal for the rest of this boot (image build).\n[Journal]\nStorage=volatile\n' >"$dropin"
    log "journald keeps this boot's journal in memory (/run/log/journal) from now on"
    systemctl restart systemd-journald.service
  fi
  for unit in syslog.socket rsyslog.service syslog-ng.service; do
    if systemctl is-active --quiet "$unit"; then
      log "stopping $unit"
      systemctl stop "$unit"
    fi
  done
}

# The boot and the time cleanup finished, for validate --live.
mark_live_cleanup() {
  [ -z "$TARGET_ROOT" ] && systemd_running || return 0
  ensure_dir "$LIVE_CLEANUP_DIR" 0700 root:root
  cat /proc/sys/kernel/random/boot_id >"$LIVE_CLEANUP_MARK"
}

clean_logs() {
  local R=$TARGET_ROOT
  [ -d "$R/var/log" ] || return 0
  find "$R/var/log/journal" -type f -delete 2>/dev/null || true
  find "$R/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find "$R/var/log" -type f -size +0 -exec truncate -s 0 {} +
}

clean_fleetmq_state() {
  local R=$TARGET_ROOT
  rm -f "$R$SECRETS_TARGET"/* "$R$ETC_DIR"/tls/* 2>/dev/null || true
  # The host's key and certificate of the cluster CA: configure issues each instance its own.
  rm -f "$R$CLUSTER_TLS_DIR"/* "$R$REDIS_TLS_DIR"/* 2>/dev/null || true
  # What first boot wrote for the operator: the admin password and the cluster secret.
  rm -f "$R$CREDENTIALS_FILE" "$R"/root/.fleetmq-credentials.*
  rm -rf "$R/var/tmp/fleetmq-stage/secrets" "$R/var/tmp/fleetmq-stage/node.env"
  if [ -f "$R$BROKER_ENV" ]; then
    printf '# Written by fleetmq-provision configure from the node env file.\n' >"$R$BROKER_ENV"
  fi
  # R is empty on a running system (an AMI build on a live instance): the paths are absolute.
  rm -rf "$R${STATE_DIR:?}" "$R${DATA_DIR:?}"/*
  # Redis: no data, and no Sentinel identity (clones sharing a Sentinel id break failover).
  rm -f "$R"/var/lib/redis/*.rdb "$R"/var/lib/redis/*.aof
  rm -rf "$R"/var/lib/redis/appendonlydir
  if [ -f "$R/etc/redis/sentinel.conf" ]; then
    sed -i -E '/^sentinel (myid|known-replica|known-sentinel|current-epoch|config-epoch|leader-epoch) /d' "$R/etc/redis/sentinel.conf"
  fi
  # The Redis password, in the lines configure wrote (and Sentinel rewrote): first boot's configure
  # writes both files again with the instance's own password (its stamps are gone with STATE_DIR).
  local conf
  for conf in "$R"/etc/redis/*.conf; do
    [ -f "$conf" ] || continue
    sed -i -E "/$REDIS_SECRET_LINES/d" "$conf"
  done
}

clean_caches() {
  local R=$TARGET_ROOT
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin
  find "$R/var/cache/apt/archives" -name '*.deb' -delete 2>/dev/null || true
  find "$R/tmp" -mindepth 1 -delete 2>/dev/null || true
}

phase_cleanup() {
  require_root
  step "SSH keys and configuration"
  clean_ssh
  step "passwords"
  clean_passwords
  step "machine identity and history"
  clean_identity
  step "logs"
  quiet_live_logging
  clean_logs
  step "FleetMQ and Redis state"
  clean_fleetmq_state
  step "caches"
  clean_caches
  mark_live_cleanup
}
