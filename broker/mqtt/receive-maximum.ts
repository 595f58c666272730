import type { Client } from 'aedes'
import { handledFast, tapInbound, tapOutbound } from '../core/wire.js'
import { internals } from '../core/aedes-adapter.js'
import { existingSession, sessionOf, setInboundQuota, startPaced } from '../core/session.js'

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
 * The count lives in the connection's Session (core/session.ts), with the QoS 1 PUBLISH packets the
 * broker handles itself (mqtt/fast-publish.ts: 3.1.1 form, no 5.0 properties), which count from
 * the moment they are read until their PUBACK is written. Those are paced at the limit instead of
 * disconnected while the node's own PUBACKs will free the quota (core/session.ts startWithinQuota)
 * and get 0x93 when only the client's open QoS 2 flows hold it. MQTT.js 5.16
 * ignores the server's Receive Maximum and sends every QoS 1 publish at once, and the node's PUBACK
 * follows the publish [MQTT-4.3.2-4]: 150 `publishAsync` calls in a row got 0x93 when the fast
 * path was counted like this one, and MQTT.js, resending its in-flight messages on reconnect,
 * was cut again at once. A packet this module counts (5.0 properties, QoS 2) over the limit
 * still gets 0x93, the unacknowledged packets of both paths together.
 *
 * Packets the client sent with the CONNECT (aedes queues them until the session is restored) count
 * too; the DISCONNECT can only follow the CONNACK, so a client over the limit then gets it once
 * aedes marks it connected, if it is still over. 3.1/3.1.1 have no Receive Maximum: their
 * connections are not tapped.
 */

export interface ReceiveMaximumOptions {
  /** `limits.receiveMaximum`. */
  readonly receiveMaximum: number
  /** Ends a client over the limit (called once per connection; it is closing afterwards). */
  readonly onExceeded: (client: Client, unacknowledged: number) => void
}

const REASON_CODE_ERROR_THRESHOLD = 0x80

export function installReceiveMaximum({ receiveMaximum, onExceeded }: ReceiveMaximumOptions): () => void {
  setInboundQuota({ receiveMaximum, onExceeded })

  const removeConnack = tapOutbound({ cmds: ['connack'], mqtt5Only: true }, (client, packet, send) => {
    if (packet.cmd !== 'connack' || (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD) return send(packet)
    if (existingSession(client) !== undefined) {
      // PUBLISH packets came with the CONNECT: checked once the client is connected.
      client.once('connected', () => {
        const session = existingSession(client)
        if (session !== undefined && session.inboundUnacknowledged > receiveMaximum && !client.closed) onExceeded(client, session.inboundUnacknowledged)
      })
    }
    return send({ ...packet, properties: { ...packet.properties, receiveMaximum } })
  })

  // The broker's own path counts its packets itself (core/session.ts startWithinQuota).
  const removeInbound = tapInbound({ cmds: ['publish'], mqtt5Only: true }, (client, packet) => {
    if (packet.cmd !== 'publish' || packet.qos === 0 || client.closed || handledFast(packet)) return
    const session = sessionOf(client)
    if (packet.qos === 1) session.inboundQos1++
    else (session.inboundQos2 ??= new Set()).add(packet.messageId!)
    if (session.inboundUnacknowledged > receiveMaximum && internals(client).connackSent === true) onExceeded(client, session.inboundUnacknowledged)
  })

  const removeAcks = tapOutbound({ cmds: ['puback', 'pubrec', 'pubcomp'], mqtt5Only: true }, (client, packet, send) => {
    const session = existingSession(client)
    if (session !== undefined && !handledFast(packet)) {
      if (packet.cmd === 'puback') {
        if (session.inboundQos1 > 0) session.inboundQos1--
      } else if (packet.cmd === 'pubcomp' || (packet.cmd === 'pubrec' && (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD)) {
        if (packet.messageId !== undefined) session.inboundQos2?.delete(packet.messageId)
      }
      // Quota freed: PUBLISH packets the broker's own path paced may start.
      if (session.paced?.length) setImmediate(startPaced, client, session)
    }
    return send(packet)
  })

  return () => {
    setInboundQuota(undefined)
    removeConnack()
    removeInbound()
    removeAcks()
  }
}
