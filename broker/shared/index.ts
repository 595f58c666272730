import type { AedesPublishPacket, Client, Subscription } from 'aedes'
import type { Packet } from 'mqtt-packet'
import type { Config } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { internals, nextPacketId, type AedesBroker, type AedesClient } from '../core/aedes-adapter.js'
import { tapInbound, tapOutbound } from '../core/wire.js'
import { MemorySharedSubscriptionGroups, type Member, type SharedSubscriptionGroups } from './groups.js'
import { INTERNAL_SHARE_PREFIX, SHARE_PREFIX, groupKey, internalSharedTopic, parseSharedTopic, type SharedTopic } from './topic.js'

export { MemorySharedSubscriptionGroups, SHARED_STRATEGIES, type SharedStrategy, type SharedSubscriptionGroups, type Member, type MessageRef } from './groups.js'
export { parseSharedTopic, INTERNAL_SHARE_PREFIX } from './topic.js'

/*
 * Shared subscriptions `$share/<group>/<filter>` for 3.1.1 and 5.0 clients [MQTT-4.8.2]. aedes
 * switches them off, so:
 * 1. arriving SUBSCRIBE/UNSUBSCRIBE packets get `$share/…` renamed to `$fleetmq/share/…` (see
 *    topic.ts) — aedes then grants, persists and restores the member's subscription as usual;
 * 2. `authorizeSubscribe` (last in the hook chain, after the ACL) registers the member in
 *    `SharedSubscriptionGroups`, and the group's first member subscribes the group once to the
 *    broker's router for the real filter;
 * 3. each routed message goes to exactly one member per group, chosen by the strategy, at
 *    min(granted QoS, published QoS), through aedes' own per-client delivery (ACL forward checks,
 *    flow control and the session's outgoing store all apply);
 * 4. a member whose connection closes with QoS 1/2 messages unacknowledged has them sent to
 *    another member at once (§4.8.2 allows it: "MAY attempt to send the message to another
 *    Client as soon as it loses its connection"); a persistent member's copy is removed from its
 *    session so the group still gets each message once. With no other member online they stay
 *    in the persistent member's session, which resends them when it comes back.
 * 5. CONNACK no longer says Shared Subscription Available = 0 [MQTT-3.2.2-13: absent = available].
 *
 * Retained messages are not sent when a shared subscription is made (EMQX and HiveMQ do the same;
 * the group would otherwise get them once per joining member).
 */

const PROTOCOL_ERROR = 0x82
const noop = (): void => {}

interface Inflight {
  readonly topic: SharedTopic
  readonly message: AedesPublishPacket
}

export interface SharedSubscriptionsFeature extends Feature {
  readonly groups: SharedSubscriptionGroups
}

export function sharedSubscriptionsFeature(config: Config, log: Logger, groups: SharedSubscriptionGroups = new MemorySharedSubscriptionGroups(config.sharedSubscriptions.strategy)): SharedSubscriptionsFeature {
  let broker: AedesBroker | undefined
  /** The connection currently serving each local member's client id. */
  const connections = new Map<string, AedesClient>()
  /** Router listeners, one per group. */
  const routes = new Map<string, (packet: AedesPublishPacket, done: () => void) => void>()
  /** QoS 1/2 messages a group sent to a member and the member has not acknowledged, by client id and packet id. */
  const inflight = new Map<string, Map<number, Inflight>>()

  const fail = (what: string) => (err: unknown) => log.warn({ err }, `shared subscriptions: ${what}`)

  const route = (topic: SharedTopic): void => {
    const key = groupKey(topic)
    if (broker === undefined || routes.has(key)) return
    const fromDollar = topic.filter.startsWith('+') || topic.filter.startsWith('#')
    const listener = (packet: AedesPublishPacket, done: () => void): void => {
      // [MQTT-4.7.2-1] wildcard filters do not match `$` topics; internal names never route.
      if ((fromDollar && packet.topic.startsWith('$')) || packet.topic.startsWith(INTERNAL_SHARE_PREFIX)) return done()
      Promise.resolve(dispatch(topic, packet)).catch(fail(`could not deliver to group ${key}`))
      done()
    }
    routes.set(key, listener)
    broker.subscribe(topic.filter, listener, noop)
  }

  const unroute = (topic: SharedTopic): void => {
    const key = groupKey(topic)
    const listener = routes.get(key)
    if (broker === undefined || listener === undefined) return
    routes.delete(key)
    broker.unsubscribe(topic.filter, listener, noop)
  }

  const dispatch = async (topic: SharedTopic, packet: AedesPublishPacket, exclude?: ReadonlySet<string>): Promise<boolean> => {
    const member = await groups.choose(topic, { id: `${packet.brokerId}:${packet.brokerCounter}`, publisherId: publisherOf(packet) }, exclude)
    if (member === undefined || broker === undefined) return false
    // Cluster: every node with members makes the same choice; the member's own node delivers.
    if (groups.isLocal && !groups.isLocal(member)) return true
    const qos = Math.min(member.qos, packet.qos) as 0 | 1 | 2
    const message = messageFor(member, packet, qos)
    if (message === undefined) return true // expired [MQTT-3.3.2-5]
    const client = connections.get(member.clientId)
    if (client === undefined || client.closed) {
      // An offline persistent member: its session keeps the message until it resumes.
      if (qos > 0) await broker.persistence.outgoingEnqueue({ clientId: member.clientId }, { ...message, brokerId: broker.id, brokerCounter: ++broker.counter })
      return true
    }
    await deliver(client, topic, message)
    return true
  }

  const deliver = async (client: AedesClient, topic: SharedTopic, message: AedesPublishPacket): Promise<void> => {
    const b = client.broker
    // No brokerId: aedes' per-client de-duplication (by brokerId and counter) must not drop this
    // copy because the member also got the message through an ordinary subscription. It also
    // marks the delivery as a shared one (`isSharedDelivery`): its QoS is the member's already.
    if (message.qos === 0) {
      client.deliver0({ ...message, brokerId: undefined } as unknown as AedesPublishPacket, noop)
      return
    }
    const messageId = nextPacketId(client)
    const brokerCounter = ++b.counter
    let pending = inflight.get(client.id)
    if (pending === undefined) inflight.set(client.id, pending = new Map())
    pending.set(messageId, { topic, message })
    if (!client.clean) await b.persistence.outgoingEnqueue({ clientId: client.id }, { ...message, brokerId: b.id, brokerCounter, messageId })
    client.deliverQoS({ ...message, brokerId: undefined, brokerCounter, messageId } as unknown as AedesPublishPacket, noop)
  }

  const memberLeft = async (client: AedesClient): Promise<void> => {
    const pending = inflight.get(client.id)
    inflight.delete(client.id)
    for (const topic of await groups.groupsOf(client.id)) {
      if (client.clean) {
        if (await groups.leave(topic, client.id)) unroute(topic)
      }
    }
    if (!client.clean) await groups.setOnline(client.id, false)
    if (pending === undefined) return
    const exclude = new Set([client.id])
    for (const [messageId, { topic, message }] of pending) {
      const other = await groups.choose(topic, { id: `${message.brokerId}:${message.brokerCounter}`, publisherId: publisherOf(message) }, exclude)
      // Cluster: a member online on another node gets it through its node.
      const remote = other !== undefined && other.online && groups.handOff !== undefined && groups.isLocal?.(other) === false
      if (other === undefined || (!connections.has(other.clientId) && !remote)) continue
      if (!client.clean) await client.broker.persistence.outgoingClearMessageId(client, { messageId })
      log.debug({ clientId: client.id, to: other.clientId, topic: message.topic }, 'shared subscription: unacknowledged message sent to another member')
      if (remote) await groups.handOff?.(other, topic, message, exclude)
      else await dispatch(topic, message, exclude)
    }
  }

  const bind = (b: AedesBroker): void => {
    if (broker !== undefined) return
    broker = b
    groups.onHandOff?.((topic, packet, exclude) => { dispatch(topic, packet, exclude).catch(fail('could not deliver a message handed over by another node')) })
    b.on('client', (client: Client) => {
      // [MQTT-3.1.2-4] Clean Start discards the previous session and its memberships. Done once
      // the connection is accepted (a refused CONNECT must not cost a member its place), when
      // any older connection of this client id is gone and before this one can subscribe.
      if (!internals(client)._cleanStart) return
      Promise.resolve(groups.groupsOf(client.id)).then(async (topics) => {
        for (const topic of topics) if (await groups.leave(topic, client.id)) unroute(topic)
      }).catch(fail('could not drop a discarded session\'s groups'))
    })
    b.on('clientDisconnect', (client: Client) => {
      const c = internals(client)
      if (connections.get(c.id) !== c) return // an older connection replaced by a session takeover
      connections.delete(c.id)
      memberLeft(c).catch(fail(`could not hand over the messages of ${c.id}`))
    })
    b.on('unsubscribe', (topics: string[], client: Client) => {
      if (client.closed) return // a closing connection: clientDisconnect handles it
      for (const name of topics) {
        const topic = name.startsWith(INTERNAL_SHARE_PREFIX) ? parseSharedTopic(name) : undefined
        if (topic) Promise.resolve(groups.leave(topic, client.id)).then((empty) => { if (empty) unroute(topic) }, fail('could not leave a group'))
      }
    })
    b.on('sessionExpired', (client: Client) => {
      Promise.resolve(groups.groupsOf(client.id)).then(async (topics) => {
        for (const topic of topics) if (await groups.leave(topic, client.id)) unroute(topic)
      }).catch(fail('could not drop an expired session\'s groups'))
    })
  }

  const rename = (topic: string): string => {
    if (!topic.startsWith(SHARE_PREFIX)) return topic
    const shared = parseSharedTopic(topic)
    return shared ? internalSharedTopic(shared) : topic
  }

  const removeInbound = tapInbound({ cmds: ['subscribe', 'unsubscribe', 'puback', 'pubrec', 'pubcomp'] }, (client, packet) => {
    switch (packet.cmd) {
      case 'subscribe':
        for (const sub of packet.subscriptions) sub.topic = rename(sub.topic)
        return
      case 'unsubscribe':
        packet.unsubscriptions = packet.unsubscriptions.map(rename)
        return
      case 'puback':
      case 'pubrec':
      case 'pubcomp':
        if (packet.messageId !== undefined && connections.get(client.id) === client) inflight.get(client.id)?.delete(packet.messageId)
    }
  })

  const removeOutbound = tapOutbound({ cmds: ['connack'] }, (_client, packet: Packet, send) => {
    if (packet.cmd === 'connack' && packet.properties?.sharedSubscriptionAvailable === false) {
      const { sharedSubscriptionAvailable: _, ...properties } = packet.properties
      return send({ ...packet, properties })
    }
    return send(packet)
  })

  return {
    name: 'shared-subscriptions',
    groups,
    preConnect(client) {
      bind(internals(client).broker)
    },
    authorizePublish(_client, packet) {
      // Nobody publishes under the renamed filters: such a message would reach members directly.
      return packet.topic.startsWith(INTERNAL_SHARE_PREFIX) ? new Error(`${INTERNAL_SHARE_PREFIX}… is reserved for shared subscriptions`) : null
    },
    async authorizeSubscribe(c, sub: Subscription) {
      if (!sub.topic.startsWith(INTERNAL_SHARE_PREFIX)) return sub
      const client = internals(c)
      const topic = parseSharedTopic(sub.topic)
      if (topic === undefined) return null
      if (client.version === 5 && (sub as Subscription & { nl?: boolean }).nl) {
        // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error.
        client.disconnect({ reasonCode: PROTOCOL_ERROR, properties: { reasonString: 'No Local is not allowed on a shared subscription' } })
        return null
      }
      const s = sub as Subscription & { rap?: boolean; subscriptionIdentifier?: number }
      connections.set(client.id, client)
      const created = await groups.join(topic, {
        clientId: client.id,
        qos: sub.qos,
        retainAsPublished: s.rap === true,
        subscriptionIdentifier: s.subscriptionIdentifier,
        online: true,
        persistent: !client.clean,
      })
      if (created) route(topic)
      else if (!routes.has(groupKey(topic))) route(topic)
      // aedes looks retained messages up under the renamed filter, which matches none: retained
      // messages are not sent for a shared subscription (see above).
      return sub
    },
    close() {
      removeInbound()
      removeOutbound()
    },
  }
}

/** aedes stamps the publisher's client id on routed packets (aedes.js emitPacket). */
const publisherOf = (packet: AedesPublishPacket): string | undefined => (packet as AedesPublishPacket & { clientId?: string }).clientId

function messageFor(member: Member, packet: AedesPublishPacket, qos: 0 | 1 | 2): AedesPublishPacket | undefined {
  let properties = packet.properties
  const expiry = (packet as AedesPublishPacket & { messageExpiry?: number }).messageExpiry
  if (expiry !== undefined) {
    const left = expiry - Date.now()
    if (left <= 0) return undefined
    // [MQTT-3.3.2-6] the lifetime left, for a message handed over after a while.
    properties = { ...properties, messageExpiryInterval: Math.ceil(left / 1000) }
  }
  if (member.subscriptionIdentifier !== undefined) properties = { ...properties, subscriptionIdentifier: member.subscriptionIdentifier }
  return {
    cmd: 'publish',
    topic: packet.topic,
    payload: packet.payload,
    qos,
    // [MQTT-3.3.1-12, MQTT-3.3.1-13]
    retain: member.retainAsPublished ? packet.retain : false,
    dup: false,
    properties,
    messageExpiry: expiry,
    clientId: publisherOf(packet),
    brokerId: packet.brokerId,
    brokerCounter: packet.brokerCounter,
  } as AedesPublishPacket
}
