# shellcheck shell=bash
# install: everything a FleetMQ host needs before it has a configuration. Build-time safe (an image
# builder runs it in a chroot): nothing here starts a service or depends on this host's identity.

# Redis and Sentinel (co-located); openssl (configure issues the host's certificate of the
# cluster CA with it); nftables (the host firewall configure installs).
readonly HOST_PACKAGES=(redis-server redis-sentinel openssl nftables)

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

has_route_out() {
  [ -n "$(ip route show default 2>/dev/null || true)" ] || [ -n "$(ip -6 route show default 2>/dev/null || true)" ]
}

install_host_packages() {
  local -a missing=()
  local pkg
  for pkg in "${HOST_PACKAGES[@]}"; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "packages present: ${HOST_PACKAGES[*]}"
    return
  fi
  has_route_out || die "${missing[*]} not installed and this host has no route out to fetch them; install them in the image (apt-get install ${missing[*]})"
  log "installing ${missing[*]} with apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_user() {
  if getent passwd "$FLEETMQ_USER" >/dev/null; then
    return
  fi
  log "creating the system user $FLEETMQ_USER"
  useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$FLEETMQ_USER"
}

ensure_folders() {
  ensure_dir "$OPT_DIR" 0755 root:root
  ensure_dir "$ETC_DIR" 0750 "root:$FLEETMQ_USER"
  ensure_dir "$SECRETS_TARGET" 0750 "root:$FLEETMQ_USER"
  ensure_dir "$DATA_DIR" 0750 "$FLEETMQ_USER:$FLEETMQ_USER"
}

# The bundle in /opt/fleetmq/<release>; `current` is set on a fresh host only. Moving a running
# node to another release restarts it: that is the upgrade phase's job, never install's.
ensure_release() {
  local dir current
  dir=$(install_release "$BUNDLE_FILE")
  current=$(current_release)
  if [ -z "$current" ]; then
    point_current "$dir"
  elif [ "$current" != "$dir" ]; then
    warn "release $(basename "$dir") unpacked beside the current $(basename "$current"); run the upgrade phase to switch to it"
  fi
  if [ "$(readlink /usr/local/bin/fleetmq 2>/dev/null || true)" != "$OPT_DIR/current/bin/fleetmq" ]; then
    ln -sfn "$OPT_DIR/current/bin/fleetmq" /usr/local/bin/fleetmq
  fi
}

ensure_default_config() {
  require_file "the default config of the current release" "$OPT_DIR/current/config/fleetmq.yaml"
  if write_file "$ETC_DIR/fleetmq.yaml" 0640 "root:$FLEETMQ_USER" <"$OPT_DIR/current/config/fleetmq.yaml"; then
    log "installed $ETC_DIR/fleetmq.yaml"
  fi
  # The unit reads this file; configure fills it. Until then it exists and holds no settings.
  if [ ! -f "$BROKER_ENV" ]; then
    printf '# Written by fleetmq-provision configure from the node env file.\n' | write_file "$BROKER_ENV" 0640 "root:$FLEETMQ_USER" || true
  fi
}

# Kernel limits for many concurrent connections: one socket (and descriptor) per MQTT client.
readonly SYSCTL_FILE=/etc/sysctl.d/60-fleetmq.conf
ensure_limits() {
  if write_file "$SYSCTL_FILE" 0644 root:root <<'SYSCTL'; then
# FleetMQ: many concurrent MQTT connections.
fs.file-max = 2097152
fs.nr_open = 2097152
net.core.somaxconn = 65535
net.ipv4.tcp_max_syn_backlog = 65535
net.ipv4.ip_local_port_range = 10240 65535
net.ipv4.tcp_fin_timeout = 15
net.core.netdev_max_backlog = 16384
SYSCTL
    log "installed $SYSCTL_FILE"
    if kernel_is_ours; then
      apply_sysctl
    else
      log "not applying $SYSCTL_FILE now: this is a chroot or container (an image build) sharing another system's kernel; systemd-sysctl applies it when the machine boots"
    fi
  fi
  write_file /etc/security/limits.d/60-fleetmq.conf 0644 root:root <<'LIMITS' || true
# FleetMQ: descriptors for the CLI run as fleetmq; the service takes LimitNOFILE from its unit.
fleetmq soft nofile 1048576
fleetmq hard nofile 1048576
LIMITS
}

# Whether the running kernel belongs to this system, so that sysctls set now are this machine's.
# Not in a chroot (our / is not PID 1's /, or /proc is not there to tell) nor in a container (an
# image build in systemd-nspawn): there the kernel is the build host's, and net.* would change the
# build host's network namespace. The file alone is enough there: systemd-sysctl reads it at boot.
kernel_is_ours() {
  local own init
  own=$(stat -Lc %d:%i / 2>/dev/null) || return 1
  init=$(stat -Lc %d:%i /proc/1/root/ 2>/dev/null) || return 1
  [ "$own" = "$init" ] || return 1
  [ ! -e /run/systemd/container ] || return 1
  [ -z "${container:-}" ] || return 1
  if command -v systemd-detect-virt >/dev/null && systemd-detect-virt --quiet --container; then return 1; fi
  systemd_running
}

# Applied key by key: in a container the kernel keeps fs.* to the host; those apply at the next boot
# of a real machine (systemd-sysctl reads the file).
apply_sysctl() {
  local key value
  local -a deferred=()
  while IFS='=' read -r key value; do
    key=$(echo "$key" | xargs)
    case "$key" in '' | '#'*) continue ;; esac
    value=$(echo "$value" | xargs)
    sysctl -q -w "$key=$value" >/dev/null 2>&1 || deferred+=("$key")
  done <"$SYSCTL_FILE"
  if [ "${#deferred[@]}" -gt 0 ]; then
    warn "the kernel refuses ${deferred[*]} here (a container keeps them to its host); they apply at the next boot of a machine"
  fi
}

phase_install() {
  require_root
  require_option "--bundle FILE (a bundle from npm run bundle)" "$BUNDLE_FILE"
  step "Redis and nftables packages"
  install_host_packages
  step "user and folders"
  ensure_user
  ensure_folders
  step "bundle"
  ensure_release
  step "systemd unit and default config"
  install_unit
  ensure_default_config
  step "connection limits"
  ensure_limits
}
