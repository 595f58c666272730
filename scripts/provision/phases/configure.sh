# shellcheck shell=bash
# configure: this node's settings from the env file, its secrets, its Redis role, its firewall;
# then starts the services. A service restarts only when something it reads changed.

# shellcheck source=../lib/firewall.sh
source "$PROVISION_DIR/lib/firewall.sh"

# The colocated Sentinels require the Redis password (render_sentinel_conf): a node told to use
# Sentinels gets their password file unless its env file already names one.
sentinel_password_line() {
  case "$FLEETMQ_PROVISION__REDIS_ROLE" in primary | replica) ;; *) return 0 ;; esac
  [ -n "${FLEETMQ_CLUSTER__REDIS__SENTINELS:-}" ] || return 0
  [ -z "${FLEETMQ_CLUSTER__REDIS__SENTINEL_PASSWORD_FILE:-}" ] || return 0
  printf "FLEETMQ_CLUSTER__REDIS__SENTINEL_PASSWORD_FILE='%s/redis-password'\n" "$SECRETS_TARGET"
}

colocated_redis() { case "$FLEETMQ_PROVISION__REDIS_ROLE" in primary | replica) return 0 ;; *) return 1 ;; esac; }

# The cluster's TLS for the broker, unless the env file names its own: the management API over
# https (other nodes and the CLI verify it against the cluster CA), and the CA of the colocated
# Redis and Sentinels for a node told to use them.
cluster_tls_lines() {
  if [ -z "${FLEETMQ_MGMT__TLS__CERT:-}" ]; then
    printf "FLEETMQ_MGMT__TLS__CERT='%s/node.pem'\nFLEETMQ_MGMT__TLS__KEY='%s/node-key.pem'\nFLEETMQ_MGMT__TLS__CA='%s/ca.pem'\n" \
      "$CLUSTER_TLS_DIR" "$CLUSTER_TLS_DIR" "$CLUSTER_TLS_DIR"
  fi
  colocated_redis || return 0
  [ -n "${FLEETMQ_CLUSTER__REDIS__SENTINELS:-}" ] || return 0
  [ -z "${FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE:-}" ] || return 0
  printf "FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE='%s/ca.pem'\n" "$CLUSTER_TLS_DIR"
}

# This host's key and its certificate of the cluster CA (broker/cluster/cluster-ca.ts). The CA is
# derived from the cluster secret, which every node of every provisioning path holds, so no CA key
# or certificate travels; the key is made here and never leaves the host. One copy for the broker,
# one for Redis and Sentinel. Returns 0 when a file changed.
configure_cluster_tls() {
  local secret="$SECRETS_TARGET/cluster-secret" work="$STATE_DIR/cluster-tls" name own changed=1
  [ -s "$secret" ] ||
    die "the cluster's TLS needs the cluster secret (stage it as secrets/cluster-secret): its CA is derived from it"
  own=$(own_address)
  ensure_dir "$STATE_DIR" 0700 root:root
  "$OPT_DIR/current/bin/fleetmq" cluster certificate --cluster-secret-file "$secret" --dir "$work" \
    --name "$FLEETMQ_PROVISION__NODE_NAME" --address "$own" --address 127.0.0.1 --address localhost >/dev/null
  ensure_dir "$CLUSTER_TLS_DIR" 0750 "root:$FLEETMQ_USER"
  for name in ca.pem node.pem node-key.pem; do
    if write_file "$CLUSTER_TLS_DIR/$name" 0640 "root:$FLEETMQ_USER" <"$work/$name"; then changed=0; fi
  done
  if colocated_redis; then
    ensure_dir "$REDIS_TLS_DIR" 0750 redis:redis
    for name in ca.pem node.pem node-key.pem; do
      if write_file "$REDIS_TLS_DIR/$name" 0640 redis:redis <"$work/$name"; then changed=0; fi
    done
  fi
  [ "$changed" -eq 1 ] || log "issued this host's certificate of the cluster CA for $own"
  return "$changed"
}

# /etc/fleetmq/fleetmq.env: the broker's keys only (its schema is strict, so the provisioning keys
# never reach it), checked by the broker before it replaces the installed file: a bad env file
# fails here, naming every wrong key, and the running node keeps its settings and keeps running.
# Returns 0 when the file changed.
install_broker_env() {
  local candidate output
  candidate=$(mktemp "$ETC_DIR/.fleetmq.env.XXXXXX")
  {
    printf '# Written by fleetmq-provision configure from %s; the FLEETMQ_PROVISION__* keys stay out.\n' "$(basename "$ENV_FILE")"
    if [ "${#BROKER_ENV_LINES[@]}" -gt 0 ]; then printf '%s\n' "${BROKER_ENV_LINES[@]}"; fi
    sentinel_password_line
    cluster_tls_lines
  } >"$candidate"
  chmod 0640 "$candidate"
  chown "root:$FLEETMQ_USER" "$candidate"
  if ! output=$(fleetmq_cli_with "$candidate" config check "$ETC_DIR/fleetmq.yaml" 2>&1); then
    rm -f "$candidate"
    printf '%s\n' "$output" >&2
    die "the broker refuses these settings (above); fix them in $(basename "$ENV_FILE") and run configure again (nothing was changed)"
  fi
  local changed=1
  if write_file "$BROKER_ENV" 0640 "root:$FLEETMQ_USER" <"$candidate"; then changed=0; fi
  rm -f "$candidate"
  return "$changed"
}

# Staged secrets move to /etc/fleetmq/secrets (readable by the broker only) and leave the stage:
# nothing secret stays in /var/tmp. A later run without them keeps the installed ones.
# Returns 0 when an installed secret changed.
install_secrets() {
  local name changed=1 file
  [ -d "$SECRETS_DIR" ] || { log "no staged secrets in $SECRETS_DIR; keeping the installed ones"; return 1; }
  ensure_dir "$SECRETS_TARGET" 0750 "root:$FLEETMQ_USER"
  for name in "${SECRET_NAMES[@]}"; do
    [ -f "$SECRETS_DIR/$name" ] || continue
    if write_file "$SECRETS_TARGET/$name" 0640 "root:$FLEETMQ_USER" <"$SECRETS_DIR/$name"; then
      log "installed secret $name"
      changed=0
    fi
    rm -f "$SECRETS_DIR/$name"
  done
  # TLS material for mqtts/wss listeners: secrets/tls/*.pem become /etc/fleetmq/tls/*.pem.
  if [ -d "$SECRETS_DIR/tls" ]; then
    ensure_dir "$ETC_DIR/tls" 0750 "root:$FLEETMQ_USER"
    for file in "$SECRETS_DIR"/tls/*; do
      [ -f "$file" ] || continue
      if write_file "$ETC_DIR/tls/$(basename "$file")" 0640 "root:$FLEETMQ_USER" <"$file"; then
        log "installed TLS file $(basename "$file")"
        changed=0
      fi
      rm -f "$file"
    done
  fi
  return "$changed"
}

redis_password() { cat "$SECRETS_TARGET/redis-password"; }

# The primary as the seed's Sentinel knows it (it moves on failover); before that the Redis host
# the env file names, else the seed.
current_primary() {
  local seed_host=${FLEETMQ_PROVISION__SEED%:*} answer
  answer=$(sentinel_primary "$seed_host")
  if [ -n "$answer" ]; then printf '%s\n' "$answer"; else printf '%s\n' "${FLEETMQ_PROVISION__REDIS_HOST:-$seed_host}"; fi
}

# Rendered with the placeholder PRIMARY_ADDRESS: the recorded checksum covers this node's inputs, so
# a failover (which moves the primary) does not make the next run rewrite and restart Redis.
# A quarter of the host's memory (1 GiB on a t3.medium, beside the broker's cluster.maxMemory).
redis_maxmemory_bytes() { awk '/^MemTotal:/ { printf "%d\n", $2 * 1024 / 4 }' /proc/meminfo; }

# The addresses Redis and Sentinel listen on: loopback only on a standalone node (nothing else needs
# them, and a port that is not open cannot be attacked); the node's own address too once it is in a
# cluster (FLEETMQ_PROVISION__PEERS, or a join), where the firewall admits the members only.
redis_bind_line() {
  local own=$1
  if [ -n "$own" ]; then printf 'bind 127.0.0.1 -::1 %s\n' "$own"; else printf 'bind 127.0.0.1 -::1\n'; fi
}

render_redis_conf() {
  local password=$1 own=$2
  cat <<CONF
# Written by fleetmq-provision configure (Redis role: $FLEETMQ_PROVISION__REDIS_ROLE). Redis and Sentinel
# rewrite this file on failover; provisioning writes it again only when this node's inputs change.
$(redis_bind_line "$own")
protected-mode yes
# TLS only, replication included, with this host's certificate of the cluster CA: nothing local
# needs plaintext (the brokers and provisioning's redis-cli speak TLS). Clients authenticate
# with the password; a certificate, when they send one, must be the cluster CA's.
port 0
tls-port $REDIS_PORT
tls-cert-file $REDIS_TLS_DIR/node.pem
tls-key-file $REDIS_TLS_DIR/node-key.pem
tls-ca-cert-file $REDIS_TLS_DIR/ca.pem
tls-auth-clients optional
tls-replication yes
daemonize no
supervised systemd
pidfile /run/redis/redis-server.pid
logfile ""
dir /var/lib/redis
appendonly yes
appendfsync everysec
tcp-keepalive 60
maxclients 10000
requirepass $password
masterauth $password
# Full memory refuses writes (OOM, counted by the brokers) instead of silently evicting sessions,
# queued and retained messages. No min-replicas-to-write: the primary is provisioned before its
# replicas and a one-node cluster has none, so it would refuse every write (docs/cluster.md).
maxmemory $(redis_maxmemory_bytes)
maxmemory-policy noeviction
CONF
  if [ "$FLEETMQ_PROVISION__REDIS_ROLE" = replica ]; then
    printf 'replicaof PRIMARY_ADDRESS %s\n' "$REDIS_PORT"
  fi
}

render_sentinel_conf() {
  local password=$1 own=$2
  cat <<CONF
# Written by fleetmq-provision configure. Sentinel rewrites this file as it learns the cluster;
# provisioning writes it again only when this node's inputs change.
$(redis_bind_line "$own")
protected-mode yes
# TLS only, to its clients and the other Sentinels, and to the Redis it monitors (tls-replication).
port 0
tls-port $SENTINEL_PORT
tls-cert-file $REDIS_TLS_DIR/node.pem
tls-key-file $REDIS_TLS_DIR/node-key.pem
tls-ca-cert-file $REDIS_TLS_DIR/ca.pem
tls-auth-clients optional
tls-replication yes
# Clients (the brokers, redis-cli) and the other Sentinels authenticate with the Redis password: a
# Sentinel reachable by the other members must not take orders (FAILOVER, SET, RESET) from anyone.
requirepass $password
sentinel sentinel-pass $password
daemonize no
supervised systemd
pidfile /run/sentinel/redis-sentinel.pid
logfile ""
dir /var/lib/redis
sentinel resolve-hostnames no
sentinel deny-scripts-reconfig yes
sentinel monitor $SENTINEL_MASTER PRIMARY_ADDRESS $REDIS_PORT 2
sentinel auth-pass $SENTINEL_MASTER $password
sentinel down-after-milliseconds $SENTINEL_MASTER 5000
sentinel failover-timeout $SENTINEL_MASTER 60000
sentinel parallel-syncs $SENTINEL_MASTER 1
CONF
}

redis_answers() {
  [ "$(REDISCLI_AUTH="$1" timeout 3 redis-cli "${REDIS_CLI_TLS[@]}" -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ]
}

sentinel_answers() {
  [ "$(sentinel_cli 127.0.0.1 PING 2>/dev/null)" = PONG ]
}

configure_redis() {
  local role=$FLEETMQ_PROVISION__REDIS_ROLE unit
  if [ "$role" = external ]; then
    for unit in redis-sentinel.service redis-server.service; do
      if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit"; then
        log "Redis is external: stopping and disabling the local $unit"
        systemctl disable --now --quiet "$unit"
      fi
    done
    return
  fi
  [ -s "$SECRETS_TARGET/redis-password" ] ||
    die "Redis role $role needs the secret redis-password (stage it as secrets/redis-password): a colocated Redis is never left without a password"
  local password own="" primary redis_conf sentinel_conf restart_redis=0 restart_sentinel=0
  password=$(redis_password)
  # A standalone primary is its own primary at 127.0.0.1: Redis and Sentinel listen on loopback only.
  if node_clustered; then own=$(own_address); fi
  redis_conf=$(render_redis_conf "$password" "$own")
  sentinel_conf=$(render_sentinel_conf "$password" "$own")
  own=${own:-127.0.0.1}
  # What this node was told: its role, the seed, its own address and the password; and its
  # certificate, which both read at start only.
  local inputs
  inputs="$role ${FLEETMQ_PROVISION__SEED:-} $own $(cat "$REDIS_TLS_DIR/node.pem" "$REDIS_TLS_DIR/ca.pem" | sha256sum)"
  if stamp_changed redis-server "$inputs $redis_conf" || [ ! -f /etc/redis/redis.conf ]; then
    if [ "$role" = primary ]; then primary=$own; else primary=$(current_primary); fi
    log "Redis $role on $own (primary $primary)"
    printf '%s\n' "${redis_conf//PRIMARY_ADDRESS/$primary}" | write_file /etc/redis/redis.conf 0640 redis:redis || true
    restart_redis=1
  fi
  if stamp_changed redis-sentinel "$inputs $sentinel_conf" || [ ! -f /etc/redis/sentinel.conf ]; then
    if [ -z "${primary:-}" ]; then
      if [ "$role" = primary ]; then primary=$own; else primary=$(current_primary); fi
    fi
    log "Sentinel monitoring $SENTINEL_MASTER at $primary"
    printf '%s\n' "${sentinel_conf//PRIMARY_ADDRESS/$primary}" | write_file /etc/redis/sentinel.conf 0640 redis:redis || true
    restart_sentinel=1
  fi
  ensure_service redis-server.service "$restart_redis"
  wait_for 30 "redis-server to answer PING" redis_answers "$password"
  ensure_service redis-sentinel.service "$restart_sentinel"
  wait_for 30 "redis-sentinel to answer PING" sentinel_answers
  record_stamp redis-server "$inputs $redis_conf"
  record_stamp redis-sentinel "$inputs $sentinel_conf"
}

# The admin user from the admin-password secret, set again only when that secret changes. On a
# node configured into a cluster the user store is the cluster's, in Redis (hence after Redis);
# a running broker applies the change by itself.
configure_admin_user() {
  local secret="$SECRETS_TARGET/admin-password" content
  [ -s "$secret" ] || { log "no admin-password secret: no admin user"; return 0; }
  content="admin $(sha256sum <"$secret")"
  stamp_changed admin-user "$content" || return 0
  if fleetmq_cli user list --json --config "$ETC_DIR/fleetmq.yaml" | grep -q '"username": "admin"'; then
    fleetmq_cli user passwd admin --password-file "$secret" --config "$ETC_DIR/fleetmq.yaml" >/dev/null
    log "changed the password of the admin user"
  else
    fleetmq_cli user add admin --admin --password-file "$secret" --config "$ETC_DIR/fleetmq.yaml" >/dev/null
    log "added the admin user"
  fi
  record_stamp admin-user "$content"
}

phase_configure() {
  require_root
  require_option "--env FILE (the node env file)" "$ENV_FILE"
  [ -x "$OPT_DIR/current/bin/fleetmq" ] || die "FleetMQ is not installed here; run the install phase first"
  load_env "$ENV_FILE"
  check_provision_settings
  local restart=0
  step "broker settings"
  if install_broker_env; then
    log "wrote $BROKER_ENV"
    restart=1
  fi
  step "secrets"
  if install_secrets; then restart=1; fi
  step "cluster TLS"
  if configure_cluster_tls; then restart=1; fi
  step "firewall"
  configure_firewall
  step "Redis (${FLEETMQ_PROVISION__REDIS_ROLE})"
  configure_redis
  step "users"
  configure_admin_user
  step "fleetmq.service"
  install_unit
  ensure_service fleetmq.service "$restart"
  wait_broker_ready 90
  log "node ${FLEETMQ_PROVISION__NODE_NAME} is ready"
}
