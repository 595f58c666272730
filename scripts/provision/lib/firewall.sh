# shellcheck shell=bash
# The host firewall (nftables, default deny inbound) and the node's place in it: who may reach which
# port. Sourced by the phases that open or close ports (configure, leave); not run on its own.
#
# Openings, all from the node env file and the broker's resolved settings:
#   everyone            SSH (22) and the TLS listeners (mqtts, wss)
#   PLAINTEXT_FROM      the plaintext listeners (mqtt, ws): the load balancer's subnets, or
#                       0.0.0.0/0 when plaintext MQTT is opted into; nobody by default
#   PEERS (+ the seed)  the management API and, with a co-located Redis, Redis and Sentinel
# FLEETMQ_PROVISION__FIREWALL=off leaves the host's firewall to the operator (and removes ours).

readonly FIREWALL_RULES="$PROVISION_DIR/firewall/fleetmq.nft"
readonly FIREWALL_FILE=/etc/fleetmq/firewall.nft
readonly NFTABLES_CONF=/etc/nftables.conf
readonly NFTABLES_INCLUDE="include \"$FIREWALL_FILE\""

# env_list VALUE: the items of a list setting, one a line: a JSON array as renderEnvFile writes it
# (["10.0.1.0/24","10.0.2.7"]) or a comma- or space-separated list.
env_list() {
  local value=$1
  value=${value#[}
  value=${value%]}
  value=${value//\"/}
  tr ', ' '\n\n' <<<"$value" | sed '/^$/d'
}

is_ipv4_network() { [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]]; }
is_ipv6_network() { [[ "$1" =~ ^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?$ ]]; }

# network_list NAME: the addresses and networks of the list setting NAME, checked; one a line.
network_list() {
  local name=$1 item
  while IFS= read -r item; do
    is_ipv4_network "$item" || is_ipv6_network "$item" ||
      die "$ENV_FILE: $name holds '$item', which is not an IP address or network (10.0.1.7, 10.0.0.0/16, fd00::/64)"
    printf '%s\n' "$item"
  done < <(env_list "${!name:-}")
}

# The addresses of HOST (an address, or a name this host resolves).
host_addresses() {
  local host=$1
  if is_ipv4_network "$host" || is_ipv6_network "$host"; then
    printf '%s\n' "$host"
  else
    getent ahosts "$host" | awk '{print $1}' | sort -u
  fi
}

# The cluster's members this node admits to management, Redis and Sentinel: FLEETMQ_PROVISION__PEERS,
# plus the seed a joining node (or a replica) talks to. Empty on a standalone node.
cluster_peers() {
  {
    network_list FLEETMQ_PROVISION__PEERS
    if [ "${FLEETMQ_PROVISION__ROLE:-}" = join ] || [ "${FLEETMQ_PROVISION__REDIS_ROLE:-}" = replica ]; then
      host_addresses "${FLEETMQ_PROVISION__SEED%:*}"
    fi
  } | sort -u
}

# Whether this node is in (or open to) a cluster: only then do management, Redis and Sentinel listen
# beyond loopback.
node_clustered() { [ -n "$(cluster_peers)" ]; }

# The broker's listening ports as its resolved settings say (the yaml, then fleetmq.env): lines of
# "tls PORT", "plaintext PORT" and "mgmt PORT"; a listener bound to loopback opens nothing.
broker_ports() {
  fleetmq_cli config check "$ETC_DIR/fleetmq.yaml" --json | "$(node_bin)" -e '
    const { config } = JSON.parse(require("fs").readFileSync(0, "utf8"))
    const loopback = (host) => /^(127\.|::1$|localhost$)/.test(host ?? "")
    for (const l of config.listeners ?? []) {
      if (loopback(l.host)) continue
      console.log(`${l.type === "mqtts" || l.type === "wss" ? "tls" : "plaintext"} ${l.port}`)
    }
    if (config.mgmt?.enabled && !loopback(config.mgmt.host)) console.log(`mgmt ${config.mgmt.port}`)'
}

# add_elements SET ITEM...: an `add element` line, nothing for no items.
add_elements() {
  local set=$1
  shift
  [ "$#" -gt 0 ] || return 0
  local IFS=,
  printf 'add element inet fleetmq %s { %s }\n' "$set" "$*"
}

# The rule set of this node: the shipped rules (default deny, SSH) and the node's openings.
render_firewall() {
  local -a tls=() plaintext=() peer_ports=() plaintext_v4=() plaintext_v6=() peers_v4=() peers_v6=()
  local kind port item
  while read -r kind port; do
    case "$kind" in
      tls) tls+=("$port") ;;
      plaintext) plaintext+=("$port") ;;
      mgmt) peer_ports+=("$port") ;;
    esac
  done < <(broker_ports)
  case "$FLEETMQ_PROVISION__REDIS_ROLE" in primary | replica) peer_ports+=("$REDIS_PORT" "$SENTINEL_PORT") ;; esac
  while IFS= read -r item; do
    if is_ipv4_network "$item"; then plaintext_v4+=("$item"); else plaintext_v6+=("$item"); fi
  done < <(network_list FLEETMQ_PROVISION__PLAINTEXT_FROM)
  while IFS= read -r item; do
    if is_ipv4_network "$item"; then peers_v4+=("$item"); else peers_v6+=("$item"); fi
  done < <(cluster_peers)
  cat "$FIREWALL_RULES"
  printf '\n# This node (fleetmq-provision configure, node %s):\n' "$FLEETMQ_PROVISION__NODE_NAME"
  add_elements public_tcp "${tls[@]}"
  # Without a network to admit them from, the plaintext ports stay closed.
  if [ "$((${#plaintext_v4[@]} + ${#plaintext_v6[@]}))" -gt 0 ]; then
    add_elements plaintext_tcp "${plaintext[@]}"
    add_elements plaintext_from_v4 "${plaintext_v4[@]}"
    add_elements plaintext_from_v6 "${plaintext_v6[@]}"
  fi
  if [ "$((${#peers_v4[@]} + ${#peers_v6[@]}))" -gt 0 ]; then
    add_elements peer_tcp "${peer_ports[@]}"
    add_elements peers_v4 "${peers_v4[@]}"
    add_elements peers_v6 "${peers_v6[@]}"
  fi
}

firewall_loaded() { nft list table inet fleetmq >/dev/null 2>&1; }

# /etc/nftables.conf (what nftables.service loads at boot) includes the node's rule set once.
ensure_nftables_include() {
  if [ ! -f "$NFTABLES_CONF" ]; then
    printf '#!/usr/sbin/nft -f\n\nflush ruleset\n\n%s\n' "$NFTABLES_INCLUDE" | write_file "$NFTABLES_CONF" 0755 root:root || true
  elif ! grep -qxF "$NFTABLES_INCLUDE" "$NFTABLES_CONF"; then
    { cat "$NFTABLES_CONF"; printf '\n# FleetMQ host firewall (fleetmq-provision configure)\n%s\n' "$NFTABLES_INCLUDE"; } |
      write_file "$NFTABLES_CONF" 0755 root:root || true
  fi
}

remove_firewall() {
  if [ -f "$NFTABLES_CONF" ] && grep -qxF "$NFTABLES_INCLUDE" "$NFTABLES_CONF"; then
    grep -vxF -e "$NFTABLES_INCLUDE" -e '# FleetMQ host firewall (fleetmq-provision configure)' "$NFTABLES_CONF" | write_file "$NFTABLES_CONF" 0755 root:root || true
  fi
  rm -f "$FIREWALL_FILE"
  if command -v nft >/dev/null && firewall_loaded; then
    log "FLEETMQ_PROVISION__FIREWALL is off: removing FleetMQ's firewall table"
    nft delete table inet fleetmq
  fi
}

configure_firewall() {
  local setting=${FLEETMQ_PROVISION__FIREWALL:-on}
  case "$setting" in
    on) ;;
    off) remove_firewall; return 0 ;;
    *) die "$ENV_FILE: FLEETMQ_PROVISION__FIREWALL='$setting' is not one of: on off" ;;
  esac
  command -v nft >/dev/null || die "nft is missing: run the install phase (it installs the nftables package)"
  local rules changed=0 refused
  rules=$(render_firewall)
  # Checked before it replaces anything: a rule set nft refuses never reaches the boot configuration.
  if ! refused=$(nft -c -f - <<<"$rules" 2>&1); then
    printf '%s\n' "$rules" >&2
    die "nft refuses the firewall rendered for this node (above): $refused; nothing was changed"
  fi
  if printf '%s\n' "$rules" | write_file "$FIREWALL_FILE" 0640 root:root; then
    log "wrote $FIREWALL_FILE"
    changed=1
  fi
  ensure_nftables_include
  systemctl enable --quiet nftables.service
  if systemd_running && { [ "$changed" -eq 1 ] || ! firewall_loaded; }; then
    log "loading the firewall: inbound denied but for what $FIREWALL_FILE opens"
    nft -f "$FIREWALL_FILE"
  fi
}
