import type { AedesPublishPacket } from 'aedes'
import type { AedesClient } from '../core/aedes-adapter.js'
import { grantedQos } from './delivery-qos.js'

/*
 * [MQTT-3.3.4-2] "If the Client has multiple overlapping subscriptions, the Server MUST deliver
 * the message to the Client respecting the maximum QoS of all the matching subscriptions."
 * aedes routes a message once per matching subscription and keeps the first copy that reaches
 * the client (lib/client.js `dedupe`), so with `a/+` at QoS 0 and `a/b` at QoS 1 a QoS 1 message
 * went out at QoS 0 whenever the QoS 0 subscription's copy came first.
 *
 * The QoS 0 subscriptions deliver through the client's `deliver0`: for a message published at
 * QoS 1 or 2, that copy now stands aside (before aedes' de-duplication marks the message as sent)
 * when another of the client's subscriptions matches it with a QoS above 0 and would take it,
 * so the copy with the higher QoS is the one delivered. Only QoS > 0 messages reaching a QoS 0
 * subscription pay for the check, one pass over the client's subscriptions.
 */

export function deliverAtHighestQos(client: AedesClient): void {
  const deliver0 = client.deliver0
  client.deliver0 = function deliverQoS0AtMost(packet, done) {
    // Another of the client's subscriptions takes it at QoS 1 or 2.
    if (packet.qos > 0 && grantedQos(client, packet) > 0) {
      setImmediate(done)
      return
    }
    deliver0.call(this, packet, done)
  }
}

/*
 * aedes' de-duplication (lib/client.js `dedupe`) keeps, per client and publishing node, the highest
 * message counter delivered, and drops any message with a lower one, as if it were a second copy.
 * The counter is taken when a message is published, but a QoS 1/2 message is routed only after its
 * copies for persistent sessions are stored (`enqueueOffline`: promises, and Redis round trips on a
 * cluster), while a QoS 0 message published after it is routed at once: a subscriber that got the
 * later QoS 0 message silently lost the earlier QoS 1 one. The copies of one message to one client
 * are handed over one after the other, in the same synchronous pass (mqemitter calls every matching
 * subscription for a message before the next message), so a copy is a duplicate exactly when its
 * counter is the last one delivered to that client: anything else resets the record first.
 */
export function dedupeByMessage(client: AedesClient): void {
  const { deliver0, deliverQoS } = client
  client.deliver0 = function deliverOnce0(packet, done) {
    forgetUnlessSame(client, packet)
    deliver0.call(this, packet, done)
  }
  client.deliverQoS = function deliverOnce(packet, done) {
    forgetUnlessSame(client, packet)
    deliverQoS.call(this, packet, done)
  }
}

/** Resets aedes' record for the publishing node unless `packet` is the message it last delivered. */
function forgetUnlessSame(client: AedesClient, packet: AedesPublishPacket): void {
  const duplicates = client.duplicates
  const { brokerId, brokerCounter } = packet as AedesPublishPacket & { brokerId?: string; brokerCounter?: number }
  if (brokerId !== undefined && duplicates[brokerId] !== brokerCounter) duplicates[brokerId] = 0
}
