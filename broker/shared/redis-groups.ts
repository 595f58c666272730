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
 * node reloads that group. While a change travels (milliseconds), two nodes may briefly disagree:
 * a message in that window can reach two members or none.
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

interface Event { readonly group: string; readonly from: string }
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
  const announce = async (key: string): Promise<void> => {
    await redis.publish(eventsChannel, JSON.stringify({ group: key, from: nodeId } satisfies Event))
  }

  const sub = redis.duplicate({ connectionName: 'fleetmq-shared-groups' })
  sub.on('error', (err: Error) => log.debug({ err }, 'shared groups subscriber: Redis error'))
  sub.on('message', (channel: string, text: string) => {
    try {
      if (channel === eventsChannel) {
        const event = JSON.parse(text) as Event
        if (event.from !== nodeId) load(event.group).catch((err: Error) => log.warn({ err }, `shared groups: could not reload ${event.group}`))
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
  const ready = sub.subscribe(eventsChannel, handoffChannel).then(loadAll).catch((err: Error) => log.warn({ err }, 'shared groups: could not subscribe to the cluster channels'))

  const put = async (key: string, member: ClusterMember): Promise<void> => {
    await redis.multi().hset(hashKey(key), member.clientId, JSON.stringify(member)).sadd(groupsKey, key).exec()
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
      await redis.hdel(hashKey(key), clientId)
      if ((await redis.hlen(hashKey(key))) === 0) await redis.srem(groupsKey, key)
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
