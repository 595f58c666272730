import type { Aedes, AedesPublishPacket, Client, Subscription } from 'aedes'
import { INTERNAL_SHARE_PREFIX } from '../shared/topic.js'
import { internals } from '../core/aedes-adapter.js'
import { topicMatches } from './topic.js'

/*
 * Every matching Subscription Identifier on the one copy of a message [MQTT-3.3.4-3, MQTT-3.3.4-4].
 *
 * aedes 2.0.0-beta.1 routes a message once per matching subscription, stamps each copy with that
 * subscription's identifier, and its per-client de-duplication lets only the first copy through:
 * a client whose subscriptions `a/#` (id 1) and `a/b` (id 2) both match `a/b` got one of the two
 * identifiers, and none when the first copy came through a subscription without one. The copy
 * that gets through passes `authorizeForward`; `withAllIdentifiers` sets the identifiers of all of
 * the client's matching subscriptions on it there (one number, or an array that mqtt-packet
 * writes as one Subscription Identifier property each).
 *
 * Cost: a WeakMap lookup per delivery to a 5.0 client. Only clients that subscribed with an
 * identifier have a list, and only their deliveries match filters (allocation-free) and, when the
 * identifiers differ from the one aedes stamped, allocate a new properties object.
 *
 * Not touched: retained messages sent because of a new subscription (they are that
 * subscription's, aedes stamps its identifier) and shared-subscription deliveries, which are
 * copies of their own (broker/shared messageFor: [MQTT-3.3.4-5] each copy carries its own
 * subscription's identifier). Both reach authorizeForward without a `brokerId`.
 */

type WithIdentifier = Subscription & { subscriptionIdentifier?: number }
type RoutedPacket = AedesPublishPacket & { brokerId?: string | null }

export interface SubscriptionIdentifiers {
  /** From `authorizeSubscribe` (live and restored subscriptions): remembers filters with an identifier. */
  subscribed(client: Client, sub: Subscription): void
  /** From `authorizeForward`: the packet with the identifiers of all matching subscriptions. */
  withAllIdentifiers(client: Client, packet: AedesPublishPacket): AedesPublishPacket
}

export function subscriptionIdentifiers(): SubscriptionIdentifiers {
  /** Per client, the filters it subscribed with an identifier (some may since be gone or changed). */
  const filtersOf = new WeakMap<Client, string[]>()
  const observed = new WeakSet<Aedes>()

  const unsubscribed = (topics: string[], client: Client): void => {
    const filters = filtersOf.get(client)
    if (filters === undefined) return
    for (const topic of topics) {
      const at = filters.indexOf(topic)
      if (at !== -1) filters.splice(at, 1)
    }
  }

  return {
    subscribed(client, sub) {
      const id = (sub as WithIdentifier).subscriptionIdentifier
      if (client.version !== 5 || id === undefined || sub.topic.startsWith(INTERNAL_SHARE_PREFIX)) return
      const broker = internals(client).broker
      if (!observed.has(broker)) {
        observed.add(broker)
        broker.on('unsubscribe', unsubscribed)
      }
      let filters = filtersOf.get(client)
      if (filters === undefined) filtersOf.set(client, filters = [])
      if (!filters.includes(sub.topic)) filters.push(sub.topic)
    },

    withAllIdentifiers(client, packet) {
      const filters = filtersOf.get(client)
      if (filters === undefined || !(packet as RoutedPacket).brokerId) return packet
      const subscriptions = internals(client).subscriptions as Record<string, { si?: number }>
      let first: number | undefined
      let all: number[] | undefined
      for (let i = 0; i < filters.length; i++) {
        // `si`: the identifier aedes keeps on the granted subscription; undefined once it was
        // replaced by one without an identifier.
        const id = subscriptions[filters[i]]?.si
        if (id === undefined || !topicMatches(filters[i], packet.topic)) continue
        if (first === undefined) first = id
        else if (id !== first && !(all ??= [first]).includes(id)) all.push(id)
      }
      const stamped = packet.properties?.subscriptionIdentifier
      if (all === undefined && (first === undefined || first === stamped)) return packet
      return { ...packet, properties: { ...packet.properties, subscriptionIdentifier: all ?? first } } as AedesPublishPacket
    },
  }
}
