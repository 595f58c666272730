# shellcheck shell=bash
# Helpers shared by the provisioning phases: logging, inputs, idempotent file and service changes.
# Sourced by fleetmq-provision; not run on its own.
# The constants below are read by the phases, which shellcheck checks one file at a time.
# shellcheck disable=SC2034

PHASE=${PHASE:-}
ENV_FILE=${ENV_FILE:-}
BUNDLE_FILE=${BUNDLE_FILE:-}
SECRETS_DIR=${SECRETS_DIR:-}
TARGET_ROOT=${TARGET_ROOT:-}
LIVE=${LIVE:-0}

readonly FLEETMQ_USER=fleetmq
readonly OPT_DIR=/opt/fleetmq
readonly ETC_DIR=/etc/fleetmq
readonly DATA_DIR=/var/lib/fleetmq
readonly SECRETS_TARGET=/etc/fleetmq/secrets
readonly BROKER_ENV=/etc/fleetmq/fleetmq.env
readonly UNIT_FILE=/etc/systemd/system/fleetmq.service
# Checksums of what provisioning rendered for files that their own services rewrite later.
readonly STATE_DIR=/var/lib/fleetmq-provision
readonly SECRET_NAMES=(cluster-secret admin-password redis-password)
# What an image's first boot writes for the operator (the admin password, the cluster secret).
readonly CREDENTIALS_FILE=/root/fleetmq-credentials
# The lines of redis.conf and sentinel.conf that hold the Redis password (an extended regex).
readonly REDIS_SECRET_LINES='^[[:space:]]*(requirepass|masterauth|sentinel[[:space:]]+(auth-pass|sentinel-pass))[[:space:]]'
# The Redis primary's name as the Sentinels monitor it; the broker's cluster.redis.name is the same.
readonly SENTINEL_MASTER=fleetmq
readonly REDIS_PORT=6379
readonly SENTINEL_PORT=26379
# The cluster's TLS (docs/security.md): this host's key and its certificate of the cluster CA,
# made by configure (`fleetmq cluster certificate`), in one copy for the broker and one for Redis.
readonly CLUSTER_TLS_DIR=/etc/fleetmq/cluster-tls
readonly REDIS_TLS_DIR=/etc/redis/tls
# redis-cli over TLS (Redis and Sentinel speak nothing else): the server verified against the
# cluster CA, this host's certificate as the client's.
readonly REDIS_CLI_TLS=(--tls --cacert "$REDIS_TLS_DIR/ca.pem" --cert "$REDIS_TLS_DIR/node.pem" --key "$REDIS_TLS_DIR/node-key.pem")
# cleanup on a running system records the boot and the moment it finished here, in /run (a tmpfs:
# never in the image). validate --live reads it.
readonly LIVE_CLEANUP_DIR=/run/fleetmq-provision
readonly LIVE_CLEANUP_MARK=/run/fleetmq-provision/cleanup-done

log() { printf '[fleetmq-provision %s] %s\n' "$PHASE" "$*"; }
# A progress line per step: scripts/join-node shows these as the steps of a phase.
step() { printf '[fleetmq-provision %s] ==> %s\n' "$PHASE" "$*"; }
warn() { printf '[fleetmq-provision %s] warning: %s\n' "$PHASE" "$*" >&2; }
die() {
  printf '[fleetmq-provision %s] error: %s\n' "$PHASE" "$*" >&2
  exit 1
}

on_error() {
  local code=$1 line=$2 command=$3
  printf '[fleetmq-provision %s] error: "%s" failed with exit code %s (%s:%s)\n' "$PHASE" "$command" "$code" "${BASH_SOURCE[1]##*/}" "$line" >&2
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

require_root() {
  [ "$(id -u)" -eq 0 ] || die "the $PHASE phase changes the system: run it as root (sudo bash $PROVISION_DIR/fleetmq-provision $PHASE ...)"
}

# require_option NAME VALUE: an option the phase cannot do without.
require_option() {
  [ -n "$2" ] || die "the $PHASE phase needs $1"
}

require_file() {
  [ -f "$2" ] || die "$1 $2 does not exist"
}

# load_env FILE: reads KEY='value' lines (systemd EnvironmentFile syntax, as renderEnvFile writes)
# into shell variables without running the file. BROKER_ENV_LINES keeps the broker's own keys.
BROKER_ENV_LINES=()
load_env() {
  local file=$1 line name value number=0
  require_file "the env file" "$file"
  BROKER_ENV_LINES=()
  while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    case "$line" in '' | '#'*) continue ;; esac
    if [[ "$line" =~ ^(FLEETMQ_[A-Z0-9_]+)=(.*)$ ]]; then
      name=${BASH_REMATCH[1]}
      value=${BASH_REMATCH[2]}
      if [[ "$value" =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
      printf -v "$name" '%s' "$value"
      [[ "$name" == FLEETMQ_PROVISION__* ]] || BROKER_ENV_LINES+=("$line")
    else
      die "$file:$number is not a FLEETMQ_NAME='value' line; render the file with renderEnvFile() (broker/config/env.ts)"
    fi
  done <"$file"
}

# require_env NAME [ALLOWED...]: a variable the env file must set, optionally to one of a list.
require_env() {
  local name=$1
  shift
  local value=${!name:-}
  [ -n "$value" ] || die "$ENV_FILE does not set $name; add it to the env file"
  if [ "$#" -gt 0 ]; then
    local allowed
    for allowed in "$@"; do [ "$value" = "$allowed" ] && return 0; done
    die "$ENV_FILE: $name='$value' is not one of: $*"
  fi
}

# broker_setting NAME DEFAULT: a FLEETMQ_* value from the installed broker env file.
broker_setting() {
  local name=$1 default=$2 line
  if [ -f "$BROKER_ENV" ]; then
    line=$(grep -E "^$name=" "$BROKER_ENV" | tail -n 1 || true)
    if [ -n "$line" ]; then
      line=${line#*=}
      line=${line#\'}
      printf '%s\n' "${line%\'}"
      return
    fi
  fi
  printf '%s\n' "$default"
}

ensure_dir() {
  local dir=$1 mode=$2 owner=$3
  [ -d "$dir" ] || mkdir -p "$dir"
  chmod "$mode" "$dir"
  chown "$owner" "$dir"
}

# write_file DEST MODE OWNER < content: replaces DEST only when the content differs (temp file in
# the same folder, then mv). Returns 0 when it changed DEST, 1 when DEST already held the content.
write_file() {
  local dest=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    chmod "$mode" "$dest"
    chown "$owner" "$dest"
    return 1
  fi
  mv -f "$tmp" "$dest"
  return 0
}

# stamp_changed NAME CONTENT: whether CONTENT differs from what was recorded under NAME last time.
# For files that their service rewrites (redis.conf, sentinel.conf): provisioning compares what it
# would render, not the live file, so a rewrite by Redis does not count as a change.
stamp_changed() {
  local name=$1 content=$2 sum
  sum=$(printf '%s' "$content" | sha256sum | cut -d' ' -f1)
  ensure_dir "$STATE_DIR" 0700 root:root
  [ "$(cat "$STATE_DIR/$name.sha256" 2>/dev/null || true)" != "$sum" ]
}

record_stamp() {
  local name=$1 content=$2
  printf '%s' "$content" | sha256sum | cut -d' ' -f1 | write_file "$STATE_DIR/$name.sha256" 0600 root:root || true
}

# ensure_service UNIT RESTART: enabled and running; restarted only when RESTART is 1 and it runs.
ensure_service() {
  local unit=$1 restart=$2
  systemctl enable --quiet "$unit"
  if [ "$restart" -eq 1 ] && systemctl is-active --quiet "$unit"; then
    log "restarting $unit (its configuration changed)"
    systemctl restart "$unit"
  elif ! systemctl is-active --quiet "$unit"; then
    log "starting $unit"
    systemctl start "$unit"
  fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND once a second until it succeeds.
wait_for() {
  local timeout=$1 description=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${timeout}s waiting for $description"
    fi
    sleep 1
  done
}

# The bundled Node.js runs small checks: minbase hosts have no curl.
node_bin() { printf '%s\n' "$OPT_DIR/current/node/bin/node"; }

# http_ok URL [CA_FILE]: whether a GET of URL answers 2xx (an https URL verified against CA_FILE).
# node:http(s), not fetch: fetch loads undici first, which on a slow first boot (QEMU without KVM)
# took most of a short timeout before any request. The 15 s cover one request only (the timer
# starts after Node has loaded); callers bound the whole wait with their own deadline, and
# `timeout` ends a Node that hangs anyway.
readonly HTTP_OK_TIMEOUT_MS=15000
http_ok() {
  timeout $((HTTP_OK_TIMEOUT_MS / 1000 + 5)) "$(node_bin)" -e '
    const [url, timeoutMs, caFile] = process.argv.slice(1);
    const secure = url.startsWith("https:");
    const options = secure && caFile ? { ca: require("node:fs").readFileSync(caFile) } : {};
    const request = require(secure ? "node:https" : "node:http").get(url, options, (response) => {
      response.resume();
      process.exit(response.statusCode >= 200 && response.statusCode < 300 ? 0 : 1);
    });
    request.setTimeout(Number(timeoutMs), () => request.destroy(new Error("timed out")));
    request.on("error", () => process.exit(1));
  ' "$1" "$HTTP_OK_TIMEOUT_MS" "${2:-}"
}

# The management API as seen from this host (a wildcard bind is reached on loopback): https when
# the broker serves it with mgmt.tls (configure sets it up with the cluster's certificates).
mgmt_url() {
  local host port scheme=http
  host=$(broker_setting FLEETMQ_MGMT__HOST 127.0.0.1)
  port=$(broker_setting FLEETMQ_MGMT__PORT 18083)
  [ -z "$(broker_setting FLEETMQ_MGMT__TLS__CERT '')" ] || scheme=https
  case "$host" in 0.0.0.0 | '::' | '[::]') host=127.0.0.1 ;; esac
  printf '%s://%s:%s\n' "$scheme" "$host" "$port"
}

# broker_ready_within SECONDS: until /readyz answers 200 (listeners bound, broker accepting).
# Returns 1, with the unit's last log lines on stderr, when it does not.
broker_ready_within() {
  local timeout=$1 deadline=$((SECONDS + $1)) url
  if [ "$(broker_setting FLEETMQ_MGMT__ENABLED true)" = "false" ]; then
    url=""
  else
    url="$(mgmt_url)/readyz"
  fi
  while :; do
    if systemctl is-active --quiet fleetmq.service && { [ -z "$url" ] || http_ok "$url" "$(broker_setting FLEETMQ_MGMT__TLS__CA '')"; }; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      journalctl -u fleetmq.service -n 30 --no-pager >&2 || true
      warn "fleetmq did not become ready${url:+ at $url} within ${timeout}s; its last log lines are above"
      return 1
    fi
    sleep 1
  done
}

wait_broker_ready() {
  broker_ready_within "$1" || die "fleetmq.service is not ready; see its log lines above (journalctl -u fleetmq)"
}

# fleetmq_cli ARGS...: the CLI as the broker sees its settings (the yaml, then fleetmq.env), run as
# the fleetmq user so that files it writes belong to the service.
fleetmq_cli() { fleetmq_cli_with "$BROKER_ENV" "$@"; }

# fleetmq_cli_with ENV_FILE ARGS...: the same with another env file.
fleetmq_cli_with() {
  local env_file=$1
  shift
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$DATA_DIR" runuser -u "$FLEETMQ_USER" -- \
    bash -c 'set -a; source "$1"; set +a; shift; exec "$@"' _ "$env_file" \
    "$OPT_DIR/current/bin/fleetmq" "$@"
}

# --- the node's place in the cluster --------------------------------------------------------------

check_provision_settings() {
  FLEETMQ_PROVISION__SEED=${FLEETMQ_PROVISION__SEED:-}
  FLEETMQ_PROVISION__ADVERTISE_ADDRESS=${FLEETMQ_PROVISION__ADVERTISE_ADDRESS:-}
  FLEETMQ_PROVISION__REDIS_HOST=${FLEETMQ_PROVISION__REDIS_HOST:-}
  require_env FLEETMQ_PROVISION__ROLE seed join
  require_env FLEETMQ_PROVISION__REDIS_ROLE primary replica external
  require_env FLEETMQ_PROVISION__NODE_NAME
  if [ "$FLEETMQ_PROVISION__ROLE" = join ] || [ "$FLEETMQ_PROVISION__REDIS_ROLE" = replica ]; then
    require_env FLEETMQ_PROVISION__SEED
  fi
  if [ -n "${FLEETMQ_PROVISION__SEED:-}" ] && ! [[ "$FLEETMQ_PROVISION__SEED" =~ ^[A-Za-z0-9.:-]+:[0-9]+$ ]]; then
    die "$ENV_FILE: FLEETMQ_PROVISION__SEED='$FLEETMQ_PROVISION__SEED' is not ADDRESS:PORT (the seed's management API, e.g. 10.0.1.10:18083)"
  fi
}

is_local_address() {
  ip -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -qxF "$1"
}

# The address other hosts reach this one on: FLEETMQ_PROVISION__ADVERTISE_ADDRESS, the seed's
# address on the seed, else the first global IPv4 address.
own_address() {
  local seed_host=${FLEETMQ_PROVISION__SEED%:*}
  if [ -n "${FLEETMQ_PROVISION__ADVERTISE_ADDRESS:-}" ]; then
    printf '%s\n' "$FLEETMQ_PROVISION__ADVERTISE_ADDRESS"
    return
  fi
  if [ -n "$FLEETMQ_PROVISION__SEED" ] && is_local_address "$seed_host"; then
    printf '%s\n' "$seed_host"
    return
  fi
  local address
  address=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n 1)
  [ -n "$address" ] || die "this host has no global IPv4 address for Redis and Sentinel to announce"
  printf '%s\n' "$address"
}


# sentinel_cli HOST ARGS...: redis-cli over TLS against the Sentinel on HOST, with the Redis password the
# Sentinels require (requirepass), from the installed secret; at most 5 s.
sentinel_cli() {
  local host=$1
  shift
  if [ -s "$SECRETS_TARGET/redis-password" ]; then
    REDISCLI_AUTH=$(cat "$SECRETS_TARGET/redis-password") timeout 5 redis-cli "${REDIS_CLI_TLS[@]}" -h "$host" -p "$SENTINEL_PORT" "$@"
  else
    timeout 5 redis-cli "${REDIS_CLI_TLS[@]}" -h "$host" -p "$SENTINEL_PORT" "$@"
  fi
}

# sentinel_primary HOST: the primary's address as the Sentinel on HOST knows it ("" when it does not answer).
sentinel_primary() {
  local answer
  answer=$(sentinel_cli "$1" --raw SENTINEL get-master-addr-by-name "$SENTINEL_MASTER" 2>/dev/null | head -n 1 || true)
  if [[ "$answer" =~ ^[0-9a-fA-F.:]+$ ]]; then printf '%s\n' "$answer"; fi
}

# The management API address for `fleetmq cluster ... --node` (a URL: the CLI takes the scheme).
mgmt_node() { mgmt_url; }

# --- bundles -----------------------------------------------------------------------------------

host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo x64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) die "unsupported machine $(uname -m): FleetMQ bundles exist for x86_64 (x64) and aarch64 (arm64)" ;;
  esac
}

# release_id FILE: <version>-<first 12 hex of the bundle's sha256>, so two builds of one version
# install side by side.
release_id() {
  local file=$1 name version arch sum
  name=$(basename "$file")
  [[ "$name" =~ ^fleetmq-(.+)-linux-(x64|arm64)\.tar\.gz$ ]] ||
    die "$name is not a FleetMQ bundle name (fleetmq-<version>-linux-<x64|arm64>.tar.gz); build one with npm run bundle"
  version=${BASH_REMATCH[1]}
  arch=${BASH_REMATCH[2]}
  [ "$arch" = "$(host_arch)" ] || die "$name is built for $arch but this host is $(uname -m); build it with npm run bundle -- --arch $(host_arch)"
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  printf '%s-%s\n' "$version" "${sum:0:12}"
}

# install_release FILE: unpacks the bundle into /opt/fleetmq/<release id> once; prints that folder.
install_release() {
  local file=$1 id dir tmp
  require_file "the bundle" "$file"
  id=$(release_id "$file")
  dir="$OPT_DIR/$id"
  if [ -f "$dir/.installed" ]; then
    log "release $id already unpacked in $dir" >&2
    printf '%s\n' "$dir"
    return
  fi
  ensure_dir "$OPT_DIR" 0755 root:root
  tmp=$(mktemp -d "$OPT_DIR/.unpack-$id.XXXXXX")
  log "unpacking $(basename "$file") into $dir" >&2
  tar -xzf "$file" -C "$tmp" --strip-components=1 --no-same-owner --no-same-permissions
  chmod -R u=rwX,go=rX "$tmp"
  chmod 0755 "$tmp/bin/fleetmq" "$tmp/node/bin/node"
  "$tmp/node/bin/node" --version >/dev/null || die "the Node.js runtime in $(basename "$file") does not run on this host"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  chmod 0755 "$dir"
  sha256sum "$file" | cut -d' ' -f1 >"$dir/.installed"
  printf '%s\n' "$dir"
}

current_release() {
  if [ -L "$OPT_DIR/current" ]; then readlink -f "$OPT_DIR/current"; fi
}

# point_current DIR: switches /opt/fleetmq/current atomically (a new link renamed over the old).
point_current() {
  local dir=$1
  [ "$(current_release)" = "$dir" ] && return 0
  ln -sfn "$dir" "$OPT_DIR/.current.new"
  mv -T "$OPT_DIR/.current.new" "$OPT_DIR/current"
  log "current release is now $(basename "$dir")"
}

# install_unit: the unit of the current release, in /etc/systemd/system; reloads systemd if it changed.
install_unit() {
  require_file "the unit of the current release" "$OPT_DIR/current/systemd/fleetmq.service"
  if write_file "$UNIT_FILE" 0644 root:root <"$OPT_DIR/current/systemd/fleetmq.service"; then
    log "installed $UNIT_FILE"
    if systemd_running; then systemctl daemon-reload; fi
  fi
}

# False in an image builder's chroot: units are then only enabled, never started or reloaded.
systemd_running() { [ -d /run/systemd/system ]; }

# The release folder fleetmq.service runs right now ("" when it is stopped).
running_release() {
  local pid exe
  pid=$(systemctl show -p MainPID --value fleetmq.service 2>/dev/null || echo 0)
  if [ -z "$pid" ] || [ "$pid" = 0 ]; then return 0; fi
  exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
  if [ -n "$exe" ]; then printf '%s\n' "${exe%/node/bin/node}"; fi
}
