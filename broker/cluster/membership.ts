import type { Redis } from 'ioredis'
import { hostname } from 'node:os'
import type { Logger } from '../log.js'
import type { HostStats } from './host-stats.js'

/*
 * Membership: every node writes its record into one Redis hash (`fleetmq:<cluster>:nodes`,
 * field = node id) every `heartbeatInterval` seconds. A reader marks a node down when its last
 * heartbeat is older than `downAfter` seconds, so a node that dies (kill -9, lost host) shows as
 * down within `downAfter` + one read, with nothing to clean up. A node that leaves writes
 * `state: left` once. Records of nodes down for a day are pruned on read.
 *
 * Heartbeat times are the writer's clock; nodes are expected to run NTP (skew well under
 * `downAfter`).
 */

export interface NodeRecord {
  readonly id: string
  readonly host: string
  readonly cluster: string
  readonly version: string
  readonly pid: number
  /** Management API `host:port`. */
  readonly mgmt?: string
  /** MQTT listener addresses `host:port`. */
  readonly mqtt: readonly string[]
  readonly startedAt: number
  readonly lastSeen: number
  readonly state: 'up' | 'left'
  readonly connections: number
  /** Messages per second published on this node (clients and wills), over the last interval. */
  readonly msgInRate: number
  /** Messages per second delivered to this node's clients, over the last interval. */
  readonly msgOutRate: number
  readonly msgInTotal: number
  readonly msgOutTotal: number
  readonly backendReady: boolean
  /** The host's CPU, load and memory, and the process's (records of earlier versions have none). */
  readonly system?: HostStats
}

export type Health = 'up' | 'down' | 'left'

export interface NodeStatus extends NodeRecord {
  readonly health: Health
  /** Seconds since the last heartbeat. */
  readonly lastSeenAgo: number
  readonly uptime: number
  /** True for the node that answered the request. */
  readonly self: boolean
}

const PRUNE_AFTER_MS = 24 * 3600 * 1000

export const nodesKey = (cluster: string): string => `fleetmq:${cluster}:nodes`

export function healthOf(record: NodeRecord, now: number, downAfterMs: number): Health {
  if (record.state === 'left') return 'left'
  return now - record.lastSeen > downAfterMs ? 'down' : 'up'
}

export interface MembershipOptions {
  readonly redis: Redis
  readonly cluster: string
  readonly nodeId: string
  readonly heartbeatInterval: number
  readonly downAfter: number
  readonly log: Logger
  /** The node's current record, minus what membership fills in. */
  readonly snapshot: () => Omit<NodeRecord, 'lastSeen' | 'state' | 'cluster' | 'host' | 'id' | 'msgInRate' | 'msgOutRate'>
}

export interface Membership {
  /** First heartbeat (best effort: an unreachable Redis only delays it). */
  start(): Promise<void>
  /** Every node known, this one first when present. */
  nodes(): Promise<NodeStatus[]>
  /** The record this node last wrote (also served when Redis is down). */
  self(): NodeRecord
  /** Writes `state: left` and stops heart-beating. */
  leave(): Promise<void>
  stop(): void
}

export function createMembership(options: MembershipOptions): Membership {
  const { redis, cluster, nodeId, log } = options
  const key = nodesKey(cluster)
  let timer: NodeJS.Timeout | undefined
  let state: NodeRecord['state'] = 'up'
  let last = { at: Date.now(), msgIn: 0, msgOut: 0 }
  let record: NodeRecord = build()

  function build(): NodeRecord {
    const snap = options.snapshot()
    const now = Date.now()
    const seconds = Math.max((now - last.at) / 1000, 0.001)
    const rec: NodeRecord = {
      ...snap,
      id: nodeId,
      host: hostname(),
      cluster,
      state,
      lastSeen: now,
      msgInRate: Math.round(((snap.msgInTotal - last.msgIn) / seconds) * 10) / 10,
      msgOutRate: Math.round(((snap.msgOutTotal - last.msgOut) / seconds) * 10) / 10,
    }
    last = { at: now, msgIn: snap.msgInTotal, msgOut: snap.msgOutTotal }
    return rec
  }

  async function beat(): Promise<void> {
    record = build()
    // Only when connected: a queued heartbeat delivered after an outage would carry a stale time.
    if (redis.status !== 'ready') return
    await redis.hset(key, nodeId, JSON.stringify(record))
  }

  const tick = (): void => {
    beat().catch((err: Error) => log.debug({ err }, 'membership heartbeat failed'))
  }
  const onReady = (): void => {
    if (timer !== undefined) tick()
  }

  return {
    async start() {
      await beat().catch((err: Error) => log.warn({ err }, 'first membership heartbeat failed; retrying every interval'))
      timer = setInterval(tick, options.heartbeatInterval * 1000)
      timer.unref()
      // Beat as soon as Redis is back (after an outage or a Sentinel failover, whose new primary
      // may lack the last heartbeats) rather than up to an interval later: other nodes would
      // otherwise see this node down for that long.
      redis.on('ready', onReady)
    },
    async nodes() {
      const now = Date.now()
      const raw = await redis.hgetall(key)
      const out: NodeStatus[] = []
      for (const [id, text] of Object.entries(raw)) {
        let rec: NodeRecord
        try {
          rec = JSON.parse(text) as NodeRecord
        } catch {
          continue
        }
        const health = healthOf(rec, now, options.downAfter * 1000)
        if (health !== 'up' && now - rec.lastSeen > PRUNE_AFTER_MS) {
          await redis.hdel(key, id)
          continue
        }
        out.push(toStatus(id === nodeId ? record : rec, now, options.downAfter * 1000, id === nodeId))
      }
      if (!out.some((n) => n.self)) out.push(toStatus(record, now, options.downAfter * 1000, true))
      return out.sort((a, b) => Number(b.self) - Number(a.self) || a.id.localeCompare(b.id))
    },
    self: () => record,
    async leave() {
      if (timer) clearInterval(timer)
      timer = undefined
      redis.off('ready', onReady)
      state = 'left'
      record = build()
      await redis.hset(key, nodeId, JSON.stringify(record))
    },
    stop() {
      if (timer) clearInterval(timer)
      timer = undefined
      redis.off('ready', onReady)
    },
  }
}

function toStatus(rec: NodeRecord, now: number, downAfterMs: number, self: boolean): NodeStatus {
  const health = self && rec.state === 'up' ? 'up' : healthOf(rec, now, downAfterMs)
  return {
    ...rec,
    health,
    self,
    lastSeenAgo: Math.round((now - rec.lastSeen) / 100) / 10,
    uptime: Math.round((now - rec.startedAt) / 1000),
  }
}
