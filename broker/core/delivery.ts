import { Transform } from 'node:stream'
import type { Aedes, AedesPublishPacket, Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import { internals, nextPacketId, wrapPersistenceMethod, writeLikeAedes, type AedesBroker, type AedesClient } from '../core/aedes-adapter.js'
import { topicMatches } from '../mqtt/topic.js'
import { INTERNAL_SHARE_PREFIX } from '../shared/topic.js'

/*
 * A client's deliveries, decided in one place: aedes routes a message once per matching
 * subscription and calls the client's `deliver0` (QoS 0 subscriptions) or `deliverQoS` for each
 * copy; `takeOverDelivery` replaces both, once per connection, with one function each that decides
 * what aedes 2.0.0-beta.1 gets wrong, in this order:
 *
 * - Overlapping subscriptions [MQTT-3.3.4-2]: one copy, at the highest QoS granted to a matching
 *   subscription. aedes keeps the first copy that reaches the client (lib/client.js `dedupe`), so
 *   with `a/+` at QoS 0 and `a/b` at QoS 1 a QoS 1 message went out at QoS 0 whenever the QoS 0
 *   subscription's copy came first. A QoS 0 subscription's copy of a QoS 1/2 message now stands
 *   aside when another of the client's subscriptions takes it at QoS 1 or 2 (one pass over the
 *   client's subscriptions, paid only by QoS > 0 messages reaching a QoS 0 subscription).
 * - De-duplication: aedes keeps, per client and publishing node, the highest message counter
 *   delivered, and drops any message with a lower one as if it were a second copy. The counter is
 *   taken when a message is published, but a QoS 1/2 message is routed only after its copies for
 *   persistent sessions are stored (Redis round trips on a cluster), while a QoS 0 message
 *   published after it is routed at once: the subscriber lost the QoS 1 message for good (187 of
 *   300 in test/cluster/session-backlog.test.ts). The copies of one message to one client are
 *   handed over one after the other in one synchronous pass (mqemitter calls every matching
 *   subscription for a message before the next message), so a copy is a duplicate exactly when its
 *   counter is the last one delivered to that client: anything else resets aedes' record first.
 * - Granted QoS [MQTT-3.8.4-8]: min(published QoS, granted QoS). `grantedQos` caps a QoS 2
 *   message at the highest matching subscription (from authorizeForward: aedes let a QoS 2 message
 *   reach a QoS 1 `a/+` subscription at QoS 2). aedes then caps every QoS 1/2 delivery at the QoS
 *   of the client's subscription whose filter is the topic name itself (lib/client.js
 *   `deliverQoS`): with `a/b` at QoS 0 beside `a/+` at QoS 1 that undid overlapping (QoS 0), and
 *   it capped a shared subscription's delivery (`$share/g/a/b` at QoS 1, already at the member's
 *   QoS by shared/index.ts) at the ordinary subscription's QoS. A delivery whose QoS, decided
 *   above, is higher than that subscription's takes aedes' own steps without the cap
 *   (`deliverUncapped`).
 * - Retained messages sent on SUBSCRIBE go out at no more than that SUBSCRIBE's granted QoS
 *   (`capRetainedAtGranted`): aedes sent them at the QoS they were retained with.
 */

interface Granted { readonly qos: number; readonly nl?: boolean }

const REASON_CODE_ERROR_THRESHOLD = 0x80

/**
 * The highest QoS granted to the client's ordinary subscriptions that take `packet`, -1 for none: a
 * No Local subscription does not take the client's own messages [MQTT-3.8.3-3], and a shared
 * subscription's copy is a delivery of its own.
 */
export function grantedQos(client: Client, packet: AedesPublishPacket): number {
  let max = -1
  const subscriptions = internals(client).subscriptions as Record<string, Granted>
  const own = (packet as Routed).clientId === client.id
  for (const filter in subscriptions) {
    const { qos, nl } = subscriptions[filter]
    if (qos <= max || (nl === true && own) || filter.startsWith(INTERNAL_SHARE_PREFIX)) continue
    if (topicMatches(filter, packet.topic)) max = qos
    if (max === 2) break
  }
  return max
}

/**
 * Replaces the client's `deliver0` and `deliverQoS` (see above). Call once per connection, before
 * any subscription (restored ones included) captures them: aedes refuses a second CONNECT before
 * preConnect (lib/handlers/index.js).
 */
export function takeOverDelivery(client: AedesClient): void {
  const { deliver0, deliverQoS } = client
  client.deliver0 = function deliverQoS0(packet, done) {
    // Another of the client's subscriptions takes it at QoS 1 or 2.
    if (packet.qos > 0 && grantedQos(client, packet) > 0) {
      setImmediate(done)
      return
    }
    forgetUnlessSame(client, packet)
    deliver0.call(this, packet, done)
  }
  client.deliverQoS = function deliverAtDecidedQos(packet, done) {
    forgetUnlessSame(client, packet)
    const exact = client.subscriptions[packet.topic] as Granted | undefined
    if (exact === undefined || exact.qos >= packet.qos) deliverQoS.call(this, packet, done)
    else deliverUncapped(client, packet, done)
  }
}

/** Resets aedes' record for the publishing node unless `packet` is the message it last delivered. */
function forgetUnlessSame(client: AedesClient, packet: AedesPublishPacket): void {
  const { brokerId, brokerCounter } = packet as Routed
  if (brokerId && client.duplicates[brokerId] !== brokerCounter) client.duplicates[brokerId] = 0
}

type Routed = AedesPublishPacket & {
  brokerId?: string | null
  brokerCounter?: number
  clientId?: string
  nl?: boolean
  messageExpiry?: number
}

/** aedes' `deliverQoS` for a QoS 1/2 packet (lib/client.js, with lib/qos-packet.js), less the cap. */
function deliverUncapped(client: AedesClient, original: Routed, done: () => void): void {
  const broker = client.broker
  const toForward = forwardable(client, original)
  if (!toForward) {
    if (client.clean === false) broker.persistence.outgoingClearMessageId(client, original).then(noop, noop)
    setImmediate(done)
    return
  }
  setImmediate(() => {
    const packet = qosPacket(client, broker, toForward)
    const write = (): void => writeLikeAedes(client, packet as unknown as Packet, (err) => {
      if (err) client.emit('error', err)
      done()
    })
    if (client.clean || packet.retain) {
      write()
      return
    }
    broker.persistence.outgoingUpdate(client, packet).then(write, (err: Error) => {
      client.emit('error', err)
      done()
    })
  })
}

/** lib/client.js `getToForwardPacket`: No Local [MQTT-3.8.3-3], de-duplication, the forward hooks. */
function forwardable(client: AedesClient, packet: Routed): Routed | null {
  if (packet.clientId === client.id && packet.nl) return null
  if (!isNew(client, packet)) return null
  return client.broker.authorizeForward(client, packet) as Routed | null
}

/** lib/client.js `dedupe`: a copy of a message this client was already given is not sent again. */
function isNew(client: AedesClient, packet: Routed): boolean {
  const id = packet.brokerId
  if (!id) return true
  const counter = packet.brokerCounter ?? 0
  if ((client.duplicates[id] ?? 0) >= counter) return false
  client.duplicates[id] = counter
  return true
}

/** The packet aedes' QoSPacket builds (aedes-packet's fields, then the connection's packet identifier). */
function qosPacket(client: AedesClient, broker: AedesBroker, original: Routed): Routed {
  const packet: Record<string, unknown> = {
    cmd: 'publish',
    brokerId: original.brokerId || broker.id,
    brokerCounter: original.brokerCounter || ++broker.counter,
    topic: original.topic,
    payload: original.payload || Buffer.alloc(0),
    qos: original.qos || 0,
    retain: original.retain || false,
    dup: original.dup || false,
    messageId: original.messageId || nextPacketId(client),
  }
  for (const key of ['clientId', 'nl', 'properties', 'messageExpiry'] as const) {
    if (Object.prototype.hasOwnProperty.call(original, key)) packet[key] = original[key]
  }
  return packet as unknown as Routed
}

/**
 * Retained messages sent in response to a SUBSCRIBE go out at no more than the granted QoS of that
 * SUBSCRIBE's matching filters. aedes announces the SUBSCRIBE (its `subscribe` event, with each
 * filter's granted QoS) and, in the same synchronous step, asks the persistence for the retained
 * messages of its filters (lib/handlers/subscribe.js `completeSubscribe`). Installed once per
 * broker, before any client connects (server.ts).
 */
export function capRetainedAtGranted(broker: Aedes): void {
  let announced: readonly { topic: string; qos: number }[] | undefined
  broker.on('subscribe', (subs: { topic: string; qos: number }[]) => {
    announced = subs
    queueMicrotask(() => { announced = undefined })
  })
  wrapPersistenceMethod(broker, 'createRetainedStreamCombi', (retained) => (patterns) => {
    const source = retained(patterns)
    const subs = announced
    announced = undefined
    if (subs === undefined) return source
    // Only the filters aedes asked for: not those that failed, nor Retain Handling 2, nor Retain
    // Handling 1 for a subscription that already existed.
    const asked = subs.filter((sub) => sub.qos < REASON_CODE_ERROR_THRESHOLD && patterns.includes(sub.topic))
    const atGranted = new Transform({
      objectMode: true,
      transform(packet: AedesPublishPacket, _encoding, next) {
        let max = -1
        for (const sub of asked) {
          if (sub.qos > max && topicMatches(sub.topic, packet.topic)) max = sub.qos
        }
        // A copy: the persistence may hand out the stored message itself.
        next(null, max >= 0 && max < packet.qos ? { ...packet, qos: max } : packet)
      },
    })
    source.on('error', (err: Error) => atGranted.destroy(err))
    return source.pipe(atGranted)
  })
}

function noop(): void {}
