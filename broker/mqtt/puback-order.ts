import type { Aedes, Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import { handledFast, tapInbound, tapOutbound } from '../core/wire.js'
import { internals, wrapBrokerPublish } from '../core/aedes-adapter.js'

/*
 * A PUBACK only once the node owns the message. "The receiver … MUST respond with a PUBACK packet
 * containing the Packet Identifier from the incoming PUBLISH packet, having accepted ownership of
 * the Application Message" [MQTT-4.3.2-4]. aedes 2.0.0-beta.1 writes the PUBACK of a QoS 1 PUBLISH
 * first and publishes it afterwards (lib/handlers/publish.js enqueuePublish): the publisher has its
 * PUBACK — and forgets the message — while the copies for persistent sessions
 * (`enqueueOffline`, a few Redis round trips) are not stored yet. A node killed in between
 * (kill -9, a crash, a lost host) lost the message for every persistent subscriber, and for the
 * subscribers on other nodes whose copies had not left for Redis yet; the publisher would not resend
 * it. Seen in test/cluster/node-failure.test.ts: the message whose PUBACK arrived as the node
 * died never reached the subscriber.
 *
 * So the PUBACK waits here until aedes' publish of that message has finished (retained store,
 * persistent sessions' queues, this node's subscribers and the copies for other nodes routed):
 * - the inbound tap notes each QoS 1 PUBLISH of a connection, in order;
 * - the outbound tap holds a successful PUBACK (a refusal, reason code 0x80 or more, has nothing to
 *   wait for);
 * - `broker.publish`, which aedes calls right after writing the PUBACK, marks it published;
 * PUBACKs leave in the order their PUBLISH packets arrived, whatever order their publishes finish
 * in [MQTT-4.6.0-2]. A publish that fails (Redis refused the write) ends the connection and its
 * PUBACK is never sent: the client resends the message on its next connection [MQTT-4.4.0-1].
 *
 * The PUBLISH packets the broker decodes itself (mqtt/fast-publish.ts, most of them) are published
 * first and acknowledged after; this covers the others (5.0 packets with properties, split ones).
 *
 * aedes reads a client's next packets once the publish has finished either way (its `done`), so
 * this adds no wait to the publisher's socket; its PUBACK comes after the stores rather than before.
 */

interface Pending {
  readonly messageId: number
  puback: { readonly packet: Packet; readonly send: (packet: Packet) => boolean } | undefined
  published: boolean
}

const REASON_CODE_ERROR_THRESHOLD = 0x80

export function pubackAfterPublish(broker: Aedes): () => void {
  /** Per connection: its QoS 1 PUBLISH packets not yet acknowledged, in arrival order. */
  const pending = new WeakMap<Client, Pending[]>()
  const ours = (client: Client): boolean => internals(client).broker === broker

  const release = (client: Client, queue: Pending[]): void => {
    while (queue.length > 0 && queue[0].published && queue[0].puback !== undefined) {
      const { packet, send } = queue.shift()!.puback!
      if (!client.closed) send(packet)
    }
  }

  const removeInbound = tapInbound({ cmds: ['publish'] }, (client, packet) => {
    if (packet.cmd !== 'publish' || packet.qos !== 1 || packet.messageId === undefined || !ours(client)) return
    // mqtt/fast-publish.ts writes the PUBACK once the publish is done: nothing to hold.
    if (handledFast(packet)) return
    let queue = pending.get(client)
    if (queue === undefined) pending.set(client, queue = [])
    queue.push({ messageId: packet.messageId, puback: undefined, published: false })
  })

  const removeOutbound = tapOutbound({ cmds: ['puback'] }, (client, packet, send) => {
    const queue = pending.get(client)
    const entry = queue?.find((p) => p.puback === undefined && p.messageId === packet.messageId)
    if (queue === undefined || entry === undefined) return send(packet)
    entry.puback = { packet, send }
    if (packet.cmd === 'puback' && (packet.reasonCode ?? 0) >= REASON_CODE_ERROR_THRESHOLD) entry.published = true
    release(client, queue)
    // Held: aedes goes on (to its publish) as if the PUBACK was written.
    return true
  })

  const restorePublish = wrapBrokerPublish(broker, (publish) => function publishThenAck(packet, client, done) {
    const queue = client && packet.qos === 1 ? pending.get(client) : undefined
    const entry = queue?.find((p) => p.puback !== undefined && !p.published && p.messageId === packet.messageId)
    if (queue === undefined || entry === undefined) return publish(packet, client, done)
    publish(packet, client, (err) => {
      if (!err) {
        entry.published = true
        release(client!, queue)
      }
      done?.(err)
    })
  })

  return () => {
    removeInbound()
    removeOutbound()
    restorePublish()
  }
}
