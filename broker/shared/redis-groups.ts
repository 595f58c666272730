import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { AedesPublishPacket } from 'aedes'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import { hash, type Member, type MessageRef, type SharedStrategy, type SharedSubscriptionGroups } from './groups.js'
import { groupKey, type SharedTopic } from './topic.js'

/*
 * Shared subscription groups for a cluster [MQTT-4.8.2]: "each message reaches exactly one member
 * of each group, whichever nodes the members are on".
 *
 * Every node receives every message (Redis pub/sub fan-out), so every node that has members of a
 * group makes the same choice for a message and only the node that owns the chosen member
 * delivers it. The choice is a pure function of the group's members (sorted by client id) and
 * the message, so nodes agree without a Redis round trip per message:
 * - round_robin, random: a hash of the message id (aedes brokerId:brokerCounter, the same on every
 *   node) over the online members — an even spread, as round robin gives over many messages;
 * - hash_clientid: a hash of the publisher's client id;
 * - sticky: the first online member in client-id order, until it goes.
 *
 * Membership lives in Redis (`fleetmq:<cluster>:shared:<group>/<filter>`, a hash client id →
 * member with its node; `fleetmq:<cluster>:shared-groups`, the set of groups) and is cached on
 * every node; a change is announced on the channel `fleetmq:<cluster>:shared-events` and every
 * node reloads that group, then acknowledges on `fleetmq:<cluster>:shared-acks`. A join resolves
 * (so SUBACK is sent) only when every node that received the announcement (Redis tells how many
 * did) has reloaded the group, or after CHANGE_ACK_TIMEOUT_MS: a message published after the
 * SUBACK reaches the group by the same choice on every node. Nodes can still disagree for messages
 * in flight while a change travels (a leave, which aedes acknowledges before it reaches us, or a
 * join's own window) and during a Redis outage: such a message can reach two members or none.
 *
 * Unacknowledged QoS 1/2 messages of a member that disconnected are handed to the node of the
 * member chosen next, on the channel `fleetmq:<cluster>:shared-handoff`.
 */

export interface ClusterMember extends Member {
  /** The node (process) that serves the member's connection. */
  readonly node?: string
}

type HandOffHandler = (topic: SharedTopic, packet: AedesPublishPacket, exclude: ReadonlySet<string>) => void

export interface RedisSharedSubscriptionGroups extends SharedSubscriptionGroups {
  readonly nodeId: string
  isLocal(member: Member): boolean
  handOff(member: Member, topic: SharedTopic, packet: AedesPublishPacket, exclude: ReadonlySet<string>): Promise<void>
  onHandOff(handler: HandOffHandler): void
  close(): Promise<void>
}

interface Event { readonly group: string; readonly from: string; readonly id: number }
interface Ack { readonly to: string; readonly id: number }

/** KEYS: the group's hash, the set of groups; ARGV: client id, group key. */
const LEAVE_SCRIPT = `redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 1`

/** How long a membership change waits for the other nodes to reload the group (a node that is slow or gone must not hold SUBACK for long). */
const CHANGE_ACK_TIMEOUT_MS = 3_000
interface HandOff { readonly to: string; readonly topic: SharedTopic; readonly packet: unknown; readonly exclude: string[] }

const reviveBuffers = (_key: string, value: unknown): unknown =>
  value && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data)
    ? Buffer.from((value as { data: number[] }).data)
    : value

export function createRedisSharedGroups(options: { redis: Redis; cluster: string; strategy: SharedStrategy; log: Logger }): RedisSharedSubscriptionGroups {
  const { redis, cluster, strategy, log } = options
  const nodeId = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  const prefix = `fleetmq:${cluster}:shared`
  const groupsKey = `${prefix}-groups`
  const eventsChannel = `${prefix}-events`
  const handoffChannel = `${prefix}-handoff`
  const acksChannel = `${prefix}-acks`
  const hashKey = (key: string): string => `${prefix}:${key}`
  /** group key → topic and members sorted by client id. */
  const cache = new Map<string, { topic: SharedTopic; members: ClusterMember[] }>()
  let handOffHandler: HandOffHandler | undefined

  const parseKey = (key: string): SharedTopic => {
    const slash = key.indexOf('/')
    return { group: key.slice(0, slash), filter: key.slice(slash + 1) }
  }
  const store = (key: string, members: ClusterMember[]): void => {
    if (members.length === 0) cache.delete(key)
    else cache.set(key, { topic: parseKey(key), members: [...members].sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0)) })
  }
  const load = async (key: string): Promise<void> => {
    const all = await redis.hgetall(hashKey(key))
    store(key, Object.values(all).map((v) => JSON.parse(v) as ClusterMember))
  }
  /** Announcements of this node waiting for acknowledgements, by event id. */
  const waiting = new Map<number, { acks: number; due?: number; done: () => void }>()
  let nextEventId = 0
  const settle = (id: number): void => {
    const entry = waiting.get(id)
    if (entry?.due !== undefined && entry.acks >= entry.due) {
      waiting.delete(id)
      entry.done()
    }
  }
  const announce = async (key: string): Promise<void> => {
    const id = ++nextEventId
    let timer: NodeJS.Timeout | undefined
    const confirmed = new Promise<void>((resolve) => waiting.set(id, { acks: 0, done: resolve }))
    try {
      // PUBLISH answers with the number of subscribers that got the event, this node's own included.
      const receivers = await redis.publish(eventsChannel, JSON.stringify({ group: key, from: nodeId, id } satisfies Event))
      const entry = waiting.get(id)
      if (entry === undefined) return
      entry.due = Math.max(0, receivers - 1)
      settle(id)
      timer = setTimeout(() => {
        const late = waiting.get(id)
        if (late === undefined) return
        waiting.delete(id)
        log.warn({ group: key, confirmed: late.acks, expected: late.due }, `shared groups: not every node confirmed the change to ${key} within ${CHANGE_ACK_TIMEOUT_MS} ms; going on`)
        late.done()
      }, CHANGE_ACK_TIMEOUT_MS)
      await confirmed
    } finally {
      clearTimeout(timer)
      waiting.delete(id)
    }
  }
  const acknowledge = (id: number): void => {
    const entry = waiting.get(id)
    if (entry === undefined) return
    entry.acks += 1
    settle(id)
  }

  const sub = redis.duplicate({ connectionName: 'fleetmq-shared-groups' })
  sub.on('error', (err: Error) => log.debug({ err }, 'shared groups subscriber: Redis error'))
  sub.on('message', (channel: string, text: string) => {
    try {
      if (channel === eventsChannel) {
        const event = JSON.parse(text) as Event
        if (event.from === nodeId) return
        load(event.group)
          .then(() => redis.publish(acksChannel, JSON.stringify({ to: event.from, id: event.id } satisfies Ack)))
          .catch((err: Error) => log.warn({ err }, `shared groups: could not reload ${event.group}`))
      } else if (channel === acksChannel) {
        const ack = JSON.parse(text) as Ack
        if (ack.to === nodeId) acknowledge(ack.id)
      } else if (channel === handoffChannel) {
        const h = JSON.parse(text, reviveBuffers) as HandOff
        if (h.to === nodeId) handOffHandler?.(h.topic, h.packet as AedesPublishPacket, new Set(h.exclude))
      }
    } catch (err) {
      log.warn({ err }, 'shared groups: bad message on a cluster channel')
    }
  })
  // Reload everything on every (re)subscribe: events missed while disconnected are not replayed.
  const loadAll = async (): Promise<void> => {
    const keys = await redis.smembers(groupsKey)
    for (const key of cache.keys()) if (!keys.includes(key)) cache.delete(key)
    await Promise.all(keys.map(load))
  }
  sub.on('ready', () => { loadAll().catch((err: Error) => log.warn({ err }, 'shared groups: could not load the groups')) })
  const ready = sub.subscribe(eventsChannel, handoffChannel, acksChannel).then(loadAll).catch((err: Error) => log.warn({ err }, 'shared groups: could not subscribe to the cluster channels'))

  /*
   * After its own write a node reloads the group itself: a reload another node's announcement
   * triggered may have been sent (on this same connection) just before the write and would
   * otherwise leave this node's cache without its own member, for good. Commands on one
   * connection run in order, so the last reload sent sees every write sent before it.
   */
  const put = async (key: string, member: ClusterMember): Promise<void> => {
    await redis.multi().hset(hashKey(key), member.clientId, JSON.stringify(member)).sadd(groupsKey, key).exec()
    await load(key)
    await announce(key)
  }
  const ownsAny = (key: string): boolean => cache.get(key)?.members.some((m) => m.node === nodeId) ?? false

  return {
    nodeId,
    async join(topic, member) {
      await ready
      const key = groupKey(topic)
      const had = ownsAny(key)
      const full: ClusterMember = { ...member, node: nodeId }
      store(key, [...(cache.get(key)?.members ?? []).filter((m) => m.clientId !== member.clientId), full])
      await put(key, full)
      return !had
    },
    async leave(topic, clientId) {
      await ready
      const key = groupKey(topic)
      store(key, (cache.get(key)?.members ?? []).filter((m) => m.clientId !== clientId))
      // One step, so that a member another node adds meanwhile never sits in a group missing from the set.
      await redis.eval(LEAVE_SCRIPT, 2, hashKey(key), groupsKey, clientId, key)
      await load(key)
      await announce(key)
      return !ownsAny(key)
    },
    async setOnline(clientId, online) {
      await ready
      for (const [key, group] of cache) {
        const member = group.members.find((m) => m.clientId === clientId)
        if (member === undefined) continue
        const updated: ClusterMember = { ...member, online, ...(online ? { node: nodeId } : {}) }
        store(key, group.members.map((m) => (m.clientId === clientId ? updated : m)))
        await put(key, updated)
      }
    },
    async groupsOf(clientId) {
      await ready
      return [...cache.values()].filter((g) => g.members.some((m) => m.clientId === clientId)).map((g) => g.topic)
    },
    choose(topic: SharedTopic, message: MessageRef, exclude?: ReadonlySet<string>): Member | undefined {
      const group = cache.get(groupKey(topic))
      if (group === undefined) return undefined
      const eligible = exclude ? group.members.filter((m) => !exclude.has(m.clientId)) : group.members
      const online = eligible.filter((m) => m.online)
      // With none online: the first persistent member in order (the same on every node) queues it.
      if (online.length === 0) return eligible.find((m) => m.persistent)
      switch (strategy) {
        case 'sticky':
          return online[0]
        case 'hash_clientid':
          return online[hash(message.publisherId ?? '') % online.length]
        default:
          return online[hash(message.id) % online.length]
      }
    },
    isLocal: (member) => (member as ClusterMember).node === nodeId,
    async handOff(member, topic, packet, exclude) {
      const h: HandOff = { to: (member as ClusterMember).node ?? '', topic, packet, exclude: [...exclude] }
      await redis.publish(handoffChannel, JSON.stringify(h))
    },
    onHandOff(handler) {
      handOffHandler = handler
    },
    async close() {
      await sub.quit().catch(() => sub.disconnect())
    },
  }
}
