# shellcheck shell=bash
# join: brings this node into the cluster of FLEETMQ_PROVISION__SEED (`fleetmq cluster join`) and
# waits until `fleetmq cluster status` shows it healthy. The seed itself only waits for that.
# Joining again changes nothing.

readonly JOIN_TIMEOUT=90

# Whether `fleetmq cluster status` shows this node up, in a cluster, with its backend ready.
node_healthy() {
  fleetmq_cli cluster status --json --node "$(mgmt_node)" 2>/dev/null | "$(node_bin)" -e '
    const status = JSON.parse(require("fs").readFileSync(0, "utf8"))
    const self = (status.nodes ?? []).find((n) => n.self)
    process.exit(status.cluster && self && self.health === "up" && self.backendReady ? 0 : 1)'
}

cluster_summary() {
  fleetmq_cli cluster status --json --node "$(mgmt_node)" | "$(node_bin)" -e '
    const status = JSON.parse(require("fs").readFileSync(0, "utf8"))
    const up = status.nodes.filter((n) => n.health === "up").map((n) => n.id)
    console.log(`cluster "${status.cluster}": ${up.length} nodes up (${up.join(", ")})`)'
}

phase_join() {
  require_root
  require_option "--env FILE (the node env file)" "$ENV_FILE"
  load_env "$ENV_FILE"
  check_provision_settings
  systemctl is-active --quiet fleetmq.service || die "fleetmq.service is not running; run the configure phase first"
  local secret="$SECRETS_TARGET/cluster-secret" output
  if [ "$FLEETMQ_PROVISION__ROLE" = seed ]; then
    step "this node is the seed: waiting until it is healthy"
  else
    require_file "the cluster secret (stage it as secrets/cluster-secret and run configure)" "$secret"
    step "joining the cluster through $FLEETMQ_PROVISION__SEED"
    if ! output=$(fleetmq_cli cluster join "$FLEETMQ_PROVISION__SEED" --node "$(mgmt_node)" --cluster-secret-file "$secret" --timeout "$JOIN_TIMEOUT" 2>&1); then
      printf '%s\n' "$output" >&2
      die "fleetmq cluster join $FLEETMQ_PROVISION__SEED failed (above); this node is unchanged"
    fi
    log "$output"
  fi
  step "waiting until fleetmq cluster status shows this node healthy"
  wait_for "$JOIN_TIMEOUT" "this node to show healthy in fleetmq cluster status" node_healthy
  log "$(cluster_summary)"
}
