import type { Awaitable } from '../hooks.js'
import type { SharedTopic } from './topic.js'
import { groupKey } from './topic.js'

/*
 * Who belongs to which shared subscription group, and which member gets a message. This is the
 * seam a cluster-wide (Redis) implementation replaces: the dispatcher (`index.ts`) only asks
 * "which member gets this message" and reports members joining, leaving, going offline. A
 * cluster implementation must give the same answer on every node for one message (`message.id`
 * is the same everywhere), so that exactly one node delivers it.
 */

export const SHARED_STRATEGIES = ['round_robin', 'random', 'sticky', 'hash_clientid'] as const
export type SharedStrategy = (typeof SHARED_STRATEGIES)[number]

export interface Member {
  readonly clientId: string
  /** Granted QoS: the member gets min(this, published QoS) [MQTT-3.8.4-8]. */
  readonly qos: 0 | 1 | 2
  readonly retainAsPublished: boolean
  readonly subscriptionIdentifier?: number
  /** Connected now. */
  readonly online: boolean
  /** Its session outlives the connection, so it may queue messages while offline. */
  readonly persistent: boolean
}

export interface MessageRef {
  /** Unique per message across the cluster (aedes brokerId:brokerCounter). */
  readonly id: string
  /** Client id of the publisher (hash_clientid); undefined for messages the broker publishes. */
  readonly publisherId: string | undefined
}

export interface SharedSubscriptionGroups {
  /** Adds or updates a member; resolves true when the group had no member before. */
  join(topic: SharedTopic, member: Member): Awaitable<boolean>
  /** Removes a member; resolves true when the group is now empty. */
  leave(topic: SharedTopic, clientId: string): Awaitable<boolean>
  /** A persistent member's connection closed (false) or its session resumed (true). */
  setOnline(clientId: string, online: boolean): Awaitable<void>
  /** The groups a client is a member of. */
  groupsOf(clientId: string): Awaitable<SharedTopic[]>
  /**
   * The member that gets this message: an online member picked by the strategy; with none online,
   * a persistent offline member (its session queues the message); undefined when the group has
   * no member that can take it. `exclude` skips members (one that just left).
   */
  choose(topic: SharedTopic, message: MessageRef, exclude?: ReadonlySet<string>): Awaitable<Member | undefined>
  /**
   * Cluster implementations: whether this node serves `member` (only that node delivers to it);
   * absent = every member is local.
   */
  isLocal?(member: Member): boolean
  /** Cluster implementations: has the node of `member` deliver `packet` to the group (a departed member's unacknowledged message). */
  handOff?(member: Member, topic: SharedTopic, packet: import('aedes').AedesPublishPacket, exclude: ReadonlySet<string>): Promise<void>
  /** Cluster implementations: called with the messages other nodes hand to this one. */
  onHandOff?(handler: (topic: SharedTopic, packet: import('aedes').AedesPublishPacket, exclude: ReadonlySet<string>) => void): void
}

interface Group {
  readonly topic: SharedTopic
  readonly members: Map<string, Member>
  next: number
  sticky: string | undefined
}

/** FNV-1a, 32 bit: cheap, stable across processes and nodes. */
export function hash(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** One node's groups, in memory. */
export class MemorySharedSubscriptionGroups implements SharedSubscriptionGroups {
  readonly #groups = new Map<string, Group>()
  readonly #byClient = new Map<string, Set<string>>()

  constructor(readonly strategy: SharedStrategy) {}

  join(topic: SharedTopic, member: Member): boolean {
    const key = groupKey(topic)
    let group = this.#groups.get(key)
    const created = group === undefined
    if (group === undefined) {
      group = { topic, members: new Map(), next: 0, sticky: undefined }
      this.#groups.set(key, group)
    }
    group.members.set(member.clientId, member)
    let keys = this.#byClient.get(member.clientId)
    if (keys === undefined) this.#byClient.set(member.clientId, keys = new Set())
    keys.add(key)
    return created
  }

  leave(topic: SharedTopic, clientId: string): boolean {
    const key = groupKey(topic)
    const group = this.#groups.get(key)
    this.#byClient.get(clientId)?.delete(key)
    if (this.#byClient.get(clientId)?.size === 0) this.#byClient.delete(clientId)
    if (group === undefined) return false
    group.members.delete(clientId)
    if (group.members.size > 0) return false
    this.#groups.delete(key)
    return true
  }

  setOnline(clientId: string, online: boolean): void {
    for (const key of this.#byClient.get(clientId) ?? []) {
      const group = this.#groups.get(key)
      const member = group?.members.get(clientId)
      if (group && member) group.members.set(clientId, { ...member, online })
    }
  }

  groupsOf(clientId: string): SharedTopic[] {
    return [...(this.#byClient.get(clientId) ?? [])].flatMap((key) => this.#groups.get(key)?.topic ?? [])
  }

  choose(topic: SharedTopic, message: MessageRef, exclude?: ReadonlySet<string>): Member | undefined {
    const group = this.#groups.get(groupKey(topic))
    if (group === undefined) return undefined
    const eligible = [...group.members.values()].filter((m) => !exclude?.has(m.clientId))
    const online = eligible.filter((m) => m.online)
    if (online.length === 0) return eligible.find((m) => m.persistent)
    switch (this.strategy) {
      case 'round_robin':
        return online[group.next++ % online.length]
      case 'random':
        return online[Math.floor(Math.random() * online.length)]
      case 'sticky': {
        const current = online.find((m) => m.clientId === group.sticky)
        if (current) return current
        const picked = online[Math.floor(Math.random() * online.length)]
        group.sticky = picked.clientId
        return picked
      }
      case 'hash_clientid':
        return online[hash(message.publisherId ?? '') % online.length]
    }
  }
}
