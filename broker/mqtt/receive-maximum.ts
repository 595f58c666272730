import type { Client } from 'aedes'
import { handledFast, tapInbound, tapOutbound } from './wire.js'

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
 * Per QoS 1 PUBLISH this costs a WeakMap lookup and a counter on the way in and out. Packets the
 * client sent before the CONNACK are counted but never disconnect it: it could not know the limit.
 * 3.1/3.1.1 have no Receive Maximum: their connections are not tapped.
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

  const removeConnack = tapOutbound({ cmds: ['connack'], mqtt5Only: true }, (_client, packet, send) => {
    if (packet.cmd !== 'connack' || (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD) return send(packet)
    return send({ ...packet, properties: { ...packet.properties, receiveMaximum } })
  })

  const removeInbound = tapInbound({ cmds: ['publish'], mqtt5Only: true }, (client, packet) => {
    if (packet.cmd !== 'publish' || packet.qos === 0 || client.closed) return
    // A QoS 1 PUBLISH the broker handles itself (mqtt/fast-publish.ts) is acknowledged as soon as it
    // is published, as aedes acknowledged it as soon as it was read: neither counts here.
    if (handledFast(packet)) return
    let state = states.get(client)
    if (state === undefined) states.set(client, state = { qos1: 0, qos2: undefined })
    if (packet.qos === 1) state.qos1++
    else (state.qos2 ??= new Set()).add(packet.messageId!)
    const unacknowledged = state.qos1 + (state.qos2?.size ?? 0)
    if (unacknowledged > receiveMaximum && (client as Client & { connackSent?: boolean }).connackSent === true) onExceeded(client, unacknowledged)
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
