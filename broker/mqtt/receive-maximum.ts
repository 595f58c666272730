import type { Client } from 'aedes'
import { handledFast, tapInbound, tapOutbound } from '../core/wire.js'
import { internals } from '../core/aedes-adapter.js'

/*
 * The node's own Receive Maximum, for 5.0 clients (aedes 2.0.0-beta.1 can advertise one but never
 * counts): CONNACK carries `limits.receiveMaximum` [§3.2.2.3.3], and a client with more QoS 1/2
 * PUBLISH packets unacknowledged by the node is sent DISCONNECT 0x93 Receive Maximum exceeded
 * (§3.3.4: "If the Server receives more than Receive Maximum QoS 1 and QoS 2 PUBLISH packets where
 * it has not sent a PUBACK or PUBCOMP in response, the Server uses a DISCONNECT packet with Reason
 * Code 0x93"; the client's side is [MQTT-3.3.4-7]).
 *
 * A QoS 1 PUBLISH is unacknowledged until the node writes its PUBACK; a QoS 2 one until the PUBCOMP,
 * or a PUBREC with a reason code of 0x80 or more (the flow ends there) [MQTT-4.9.0-2, §4.9]. aedes
 * answers every QoS 1 PUBLISH with exactly one PUBACK, so QoS 1 needs a counter only. QoS 2 needs
 * the packet identifiers: a PUBLISH resent with the same identifier gets a second PUBREC but one
 * PUBCOMP, and a PUBREL left over from the previous connection gets a PUBCOMP without a PUBLISH.
 *
 * QoS 1 PUBLISH packets the broker handles itself (mqtt/fast-publish.ts: 3.1.1 form, no 5.0
 * properties) are not counted. Counting them disconnects the most common client: MQTT.js 5.16
 * ignores the server's Receive Maximum and sends every QoS 1 publish at once, and the node's PUBACK
 * follows the publish [MQTT-4.3.2-4], so 150 `publishAsync` calls in a row to a topic with a
 * subscriber got 0x93, and MQTT.js, resending its in-flight messages on reconnect, would be cut
 * again at once. Such bursts are paced by TCP instead: aedes reads a connection's next bytes only
 * once the publishes of the previous read are done. Per counted PUBLISH this costs a WeakMap lookup
 * and a counter on the way in and out.
 *
 * Packets the client sent with the CONNECT (aedes queues them until the session is restored) count
 * too; the DISCONNECT can only follow the CONNACK, so a client over the limit then gets it once
 * aedes marks it connected, if it is still over. 3.1/3.1.1 have no Receive Maximum: their
 * connections are not tapped.
 */

interface Unacknowledged {
  qos1: number
  /** QoS 2 packet identifiers between PUBLISH and PUBCOMP (created with the first one). */
  qos2: Set<number> | undefined
}

export interface ReceiveMaximumOptions {
  /** `limits.receiveMaximum`. */
  readonly receiveMaximum: number
  /** Ends a client over the limit (called once per connection; it is closing afterwards). */
  readonly onExceeded: (client: Client, unacknowledged: number) => void
}

const REASON_CODE_ERROR_THRESHOLD = 0x80

export function installReceiveMaximum({ receiveMaximum, onExceeded }: ReceiveMaximumOptions): () => void {
  const states = new WeakMap<Client, Unacknowledged>()

  const unacknowledged = (state: Unacknowledged): number => state.qos1 + (state.qos2?.size ?? 0)

  const removeConnack = tapOutbound({ cmds: ['connack'], mqtt5Only: true }, (client, packet, send) => {
    if (packet.cmd !== 'connack' || (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD) return send(packet)
    if (states.has(client)) {
      // PUBLISH packets came with the CONNECT: checked once the client is connected.
      client.once('connected', () => {
        const state = states.get(client)
        if (state !== undefined && unacknowledged(state) > receiveMaximum && !client.closed) onExceeded(client, unacknowledged(state))
      })
    }
    return send({ ...packet, properties: { ...packet.properties, receiveMaximum } })
  })

  const removeInbound = tapInbound({ cmds: ['publish'], mqtt5Only: true }, (client, packet) => {
    if (packet.cmd !== 'publish' || packet.qos === 0 || client.closed || handledFast(packet)) return
    let state = states.get(client)
    if (state === undefined) states.set(client, state = { qos1: 0, qos2: undefined })
    if (packet.qos === 1) state.qos1++
    else (state.qos2 ??= new Set()).add(packet.messageId!)
    if (unacknowledged(state) > receiveMaximum && internals(client).connackSent === true) onExceeded(client, unacknowledged(state))
  })

  const removeAcks = tapOutbound({ cmds: ['puback', 'pubrec', 'pubcomp'], mqtt5Only: true }, (client, packet, send) => {
    const state = states.get(client)
    if (state !== undefined && !handledFast(packet)) {
      if (packet.cmd === 'puback') {
        if (state.qos1 > 0) state.qos1--
      } else if (packet.cmd === 'pubcomp' || (packet.cmd === 'pubrec' && (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD)) {
        if (packet.messageId !== undefined) state.qos2?.delete(packet.messageId)
      }
    }
    return send(packet)
  })

  return () => {
    removeConnack()
    removeInbound()
    removeAcks()
  }
}
