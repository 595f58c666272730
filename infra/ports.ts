/*
 * Ports of the deployment. The broker's own defaults come from its config schema, so the
 * infrastructure and the broker cannot disagree on them.
 */
import { DEFAULT_PORTS } from '../broker/config/defaults.js'

export const PORTS = Object.freeze({
  /** Public MQTT over TLS on the NLB. */
  mqtts: DEFAULT_PORTS.mqtts,
  /** Public MQTT over WebSocket + TLS on the NLB (when `wss` is on). */
  wss: 443,
  /** Broker MQTT listener behind the NLB (PROXY v2 required). */
  mqtt: DEFAULT_PORTS.mqtt,
  /** Broker WebSocket listener behind the NLB (PROXY v2 required). */
  ws: DEFAULT_PORTS.ws,
  /** Broker management HTTP API: health, cluster join, admin. */
  mgmt: DEFAULT_PORTS.mgmt,
  redis: 6379,
  sentinel: 26379,
  ssh: 22,
})
