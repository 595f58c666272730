import { createRequire } from 'node:module'
import type { Aedes, AedesOptions } from 'aedes'
import type { Redis } from 'ioredis'
import type { Config } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../mgmt/metrics.js'
import { queuedForWindows } from '../mqtt/flow-control.js'
import { Fanout, type FanoutStatus, type Message } from './fanout.js'
import { createRedis, describeRedis, redisOptions } from './redis.js'
import { listenForTakeovers } from './takeover.js'
import { replicaAcks, type ReplicaAcksStatus } from './replica-acks.js'
import { guardPersistence, guardRedisCommands } from './safe-persistence.js'
import { clientsOf } from '../core/aedes-adapter.js'

/*
 * Where a node keeps its state. With `cluster.redis` configured: sessions, subscriptions,
 * retained messages, offline and in-flight QoS 1/2 messages and wills in Redis
 * (aedes-persistence-redis) and cross-node fan-out through Redis pub/sub, routed to the nodes with
 * matching subscribers and batched (fanout.ts).
 * Without it: aedes' in-memory persistence and emitter, for a standalone node.
 *
 * A Redis outage or failover must never crash the node: every Redis client and `mq.state` has an
 * error listener, the outage is logged once, counted, and reported by /readyz, and the clients
 * reconnect by themselves. While Redis is down, messages published on this node still reach this
 * node's subscribers (local fan-out), and persistent sessions are refused with Server unavailable.
 */

const require = createRequire(import.meta.url)

/** Loaded only when the node has a Redis backend (a standalone node never needs it). */
const persistenceRedis = (opts: { conn: Redis; maxSessionDelivery: number }): NonNullable<AedesOptions['persistence']> =>
  (require('aedes-persistence-redis') as (o: { conn: Redis; maxSessionDelivery: number }) => NonNullable<AedesOptions['persistence']>)(opts)

/*
 * Every message a persistent session holds is sent when it resumes. aedes-persistence-redis reads
 * a session's stored messages with `LRANGE outgoing:<client> 0 maxSessionDelivery` (default 1,000):
 * of a session that kept more while its client was away — or that was disconnected for more than
 * `limits.maxQueued` waiting, which keeps them in the session by design — the resume sent the first
 * 1,001 and left the others in Redis, delivered only if the client reconnected yet again (with
 * 1,250 kept, the last 249 PUBACKed messages never arrived). LRANGE clamps the end to the list, so
 * this reads the whole list; the resume is paced by the client's window (mqtt/flow-control.ts).
 */
const WHOLE_SESSION = Number.MAX_SAFE_INTEGER

/** How often a node asks the Redis primary how many replicas it has (ms). */
const REPLICA_POLL_MS = 1_000
/** How often a node measures its backlog and memory (ms). */
const SAMPLE_MS = 50
const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024)

export interface BackendStatus {
  readonly kind: 'memory' | 'redis'
  readonly ready: boolean
  /** Where the state lives, without credentials. */
  readonly where: string
  /** Outages since start (ready → not ready transitions). */
  readonly outages: number
  /** Redis errors seen since start. */
  readonly errors: number
  readonly lastError?: string
  /** Messages published on this node while Redis was down, delivered to this node's subscribers only. */
  readonly localOnlyPublishes: number
  /** Clients of this node closed because their client id connected on another node. */
  readonly takeovers: number
  /** ioredis status of each connection (ready, connecting, reconnecting, …). */
  readonly connections?: Readonly<Record<string, string>>
  /** QoS 0 messages dropped because the cross-node path was full (see `overloadPendingPublishes`). */
  readonly overloadDrops?: number
  /** Messages waiting for Redis to acknowledge them, or for room to be sent. */
  readonly pendingPublishes?: number
  /** Persistence operations that failed (Redis write errors such as NOREPLICAS), by operation. */
  readonly persistenceErrors: number
  readonly persistenceErrorsByOp?: Readonly<Record<string, number>>
  /** Cross-node fan-out: route table size, messages and batches sent and received, backpressure. */
  readonly fanout?: FanoutStatus
  /** Times this node became congested (its publishers and the messages for it held), and went over `cluster.maxMemory`. */
  readonly congestions?: number
  readonly memoryBoundHits?: number
  /** Writes held for replica acknowledgements (`cluster.redis.waitReplicas`), when on. */
  readonly replicaAcks?: ReplicaAcksStatus
}

export interface Backend {
  /** persistence and mq for `startNode`; empty for the in-memory backend. */
  readonly aedesOptions: Partial<AedesOptions>
  /** Refuses persistent sessions while Redis is unreachable. */
  readonly feature: Feature
  /** A client for FleetMQ's own keys (membership), or undefined for the in-memory backend. */
  readonly redis: Redis | undefined
  status(): BackendStatus
  /** Listens for the broker's persistence errors (an unhandled aedes 'error' would end the process). */
  attach(aedes: Aedes): void
  /** Where dropped messages are counted. */
  useMetrics(metrics: Pick<Metrics, 'dropped'>): void
  close(): Promise<void>
}

/** An error aedes turns into CONNACK return code 3 (3.1.1) / reason 0x88 Server unavailable (5.0). */
function serverUnavailable(message: string): Error {
  return Object.assign(new Error(message), { returnCode: 3 })
}

export function createBackend(config: Config, log: Logger): Backend {
  const settings = config.cluster.redis
  if (!settings) {
    log.info({ backend: 'memory' }, 'state in memory (standalone node): sessions and retained messages do not survive a restart; configure cluster.redis to keep them in Redis')
    return {
      aedesOptions: {},
      feature: { name: 'cluster-backend' },
      redis: undefined,
      status: () => ({ kind: 'memory', ready: true, where: 'memory', outages: 0, errors: 0, localOnlyPublishes: 0, takeovers: 0, persistenceErrors: 0 }),
      attach: () => undefined,
      useMetrics: () => undefined,
      close: async () => undefined,
    }
  }

  const where = describeRedis(settings)
  const options = redisOptions(settings)
  const clients = {
    persistence: createRedis(options, 'fleetmq-persistence'),
    publish: createRedis(options, 'fleetmq-publish'),
    subscribe: createRedis(options, 'fleetmq-subscribe'),
    own: createRedis(options, 'fleetmq-membership'),
  }
  let ready = false
  let outages = 0
  let errors = 0
  let lastError: string | undefined
  let downSince = Date.now()
  let localOnlyPublishes = 0
  let closing = false
  let metrics: Pick<Metrics, 'dropped'> | undefined

  const allReady = (): boolean => Object.values(clients).every((c) => c.status === 'ready')
  const update = (): void => {
    const now = allReady()
    if (now === ready || closing) return
    ready = now
    if (ready) {
      log.info({ backend: 'redis', redis: where, downMs: Date.now() - downSince }, `Redis reachable at ${where}: ready`)
    } else {
      outages++
      downSince = Date.now()
      log.error({ backend: 'redis', redis: where, outages, lastError }, `Redis unreachable at ${where}: not ready, persistent sessions refused, local delivery only until it is back`)
    }
  }
  const onError = (role: string) => (err: Error): void => {
    errors++
    lastError = `${role}: ${err.message}`
    // One line per outage: ioredis reports every failed reconnect attempt.
    if (ready) log.warn({ err, role }, `Redis error (${role})`)
    else log.debug({ err, role }, `Redis error (${role})`)
  }
  for (const [role, client] of Object.entries(clients)) {
    client.on('error', onError(role))
    for (const event of ['ready', 'close', 'end', 'reconnecting']) client.on(event, update)
    // A client that gives up ('end') while the node runs would leave it not ready for ever:
    // start it again.
    client.on('end', () => {
      if (closing) return
      log.warn({ role }, `Redis connection (${role}) ended; reconnecting`)
      setTimeout(() => { if (!closing && client.status === 'end') client.connect().catch(() => undefined) }, 1_000).unref()
    })
  }

  let overloadDrops = 0
  const drop = (): void => {
    overloadDrops++
    metrics?.dropped('overload')
  }
  const dropQos0AfterMs = config.cluster.overloadDropQos0After * 1000
  const mq = new Fanout({
    pub: clients.publish,
    sub: clients.subscribe,
    cluster: config.cluster.name,
    heartbeatInterval: config.cluster.heartbeatInterval,
    onError: onError('fanout'),
    debug: (message, fields) => log.debug(fields ?? {}, message),
    overload: { dropQos0AfterMs, onDrop: drop },
  })
  const emitThroughRedis = mq.emit.bind(mq)
  const localEmit = mq.emitLocal.bind(mq)
  /*
   * Overload [the cross-node path is bounded, and so is what a node owns]:
   * - Out: at most `overloadPendingPublishes` messages sent to Redis and not yet acknowledged.
   *   Beyond it, messages wait, and so does the publisher: aedes reads a client's next packet only
   *   once this one was routed (queued for Redis), so its socket is not read (TCP backpressure)
   *   and its next PUBACKs come later. QoS 0 messages are dropped (counted) instead only once the
   *   wait has lasted `overloadDropQos0After` seconds.
   * - Congestion (backpressure end to end, issue 16): sampled every `SAMPLE_MS`, a node whose
   *   subscribers have more than `overloadQueuedMessages` QoS 1/2 messages waiting for their
   *   windows, or more than `overloadBufferedBytes` unsent in their sockets, or whose RSS is over
   *   `maxMemory`, is congested until all three are back under half (the memory: 90 %) of their
   *   bound. While it is, its own publishers and every other node's messages for it are held
   *   (fanout.ts): no PUBACK runs ahead of delivery, and memory stays bounded.
   * - In: while this node's subscribers hold more than `overloadBufferedBytes` unsent, QoS 0
   *   messages from Redis are dropped and counted.
   */
  const maxPending = config.cluster.overloadPendingPublishes
  let pending = 0
  const waiting: { message: Message; done?: (err?: Error | null) => void }[] = []
  let waitingSince = 0
  let inboundOverloaded = false
  const isQoS0 = (message: Message): boolean => (message.qos ?? 0) === 0 && !message.topic.startsWith('$SYS/')
  const fanoutError = onError('fanout')
  // `done` (aedes reads the publisher's next packet) once routed; `pending` until Redis acknowledged
  // (fanout.ts emit). A copy Redis refused is lost for the other nodes, as a pub/sub message
  // is: counted in `errors`/`lastError`, the publisher's connection stays up.
  const send = (message: Message, done?: (err?: Error | null) => void): void => {
    pending++
    emitThroughRedis(message, done, (err) => {
      pending--
      if (err) fanoutError(err)
      while (pending < maxPending && waiting.length > 0) {
        const next = waiting.shift()!
        send(next.message, next.done)
      }
      if (waiting.length > 0) waitingSince = Date.now()
    })
  }
  mq.emit = (message: Message, done) => {
    if (clients.publish.status === 'ready') {
      if (pending < maxPending && waiting.length === 0) {
        send(message, done)
        return mq
      }
      if (waiting.length === 0) waitingSince = Date.now()
      waiting.push({ message, done })
      dropSustained()
      return mq
    }
    // Redis is down: serve this node's own subscribers rather than queue without bound. QoS 1/2
    // messages are also in the subscribers' sessions in Redis (stored before this emit), so a
    // subscriber on another node gets them when it resumes its session.
    localOnlyPublishes++
    localEmit(message, done)
    return mq
  }
  /** After `overloadDropQos0After` of waiting without progress, the QoS 0 messages that wait are dropped (counted). */
  const dropSustained = (): void => {
    if (waiting.length === 0 || Date.now() - waitingSince < dropQos0AfterMs) return
    for (let i = waiting.length - 1; i >= 0; i--) {
      const { message, done } = waiting[i]
      if (!isQoS0(message)) continue
      waiting.splice(i, 1)
      drop()
      done?.()
    }
  }
  mq.receive = (message) => {
    if (inboundOverloaded && isQoS0(message)) return drop()
    localEmit(message)
  }
  let aedesClients: Record<string, { conn?: { writableLength?: number } }> | undefined
  const { overloadQueuedMessages, overloadBufferedBytes, maxMemory } = config.cluster
  let congested = false
  let congestions = 0
  let memoryBoundHits = 0
  let overMemory = false
  const sampler = setInterval(() => {
    let buffered = 0
    for (const id in aedesClients) buffered += aedesClients[id].conn?.writableLength ?? 0
    inboundOverloaded = buffered > overloadBufferedBytes
    dropSustained()
    const queued = queuedForWindows()
    const rss = process.memoryUsage.rss()
    if (!overMemory && rss > maxMemory) {
      overMemory = true
      memoryBoundHits++
      log.warn({ rss, maxMemory, queued, buffered }, `memory bound hit: RSS ${mib(rss)} MiB over cluster.maxMemory ${mib(maxMemory)} MiB; publishers held cluster-wide until it is under ${mib(maxMemory * 0.9)} MiB`)
    } else if (overMemory && rss <= maxMemory * 0.9) {
      overMemory = false
      log.info({ rss, maxMemory }, `memory back under its bound: RSS ${mib(rss)} MiB`)
    }
    const over = overMemory || queued > overloadQueuedMessages || buffered > overloadBufferedBytes
    const under = !overMemory && queued <= overloadQueuedMessages / 2 && buffered <= overloadBufferedBytes / 2
    if (!congested && over) {
      congested = true
      congestions++
      log.debug({ queued, buffered, rss }, 'congested: publishers and messages for this node held')
      mq.setCongested(true)
    } else if (congested && under) {
      congested = false
      log.debug({ queued, buffered, rss }, 'caught up: held messages released')
      mq.setCongested(false)
    }
  }, SAMPLE_MS)
  sampler.unref()
  // Before aedes registers its own listener on the same topic, so that this one runs first.
  const takeover = listenForTakeovers(mq)
  let persistenceErrors = 0
  const persistenceErrorsByOp: Record<string, number> = {}
  const lastLogged = new Map<string, number>()
  let aedesId: string | undefined
  // The persistence's own fire-and-forget commands (see safe-persistence.ts): counted as errors.
  guardRedisCommands(clients.persistence, (err) => {
    errors++
    lastError = `persistence: ${err.message}`
  })
  // With Sentinel an acknowledged message must survive a failover (replica-acks.ts); one Redis has
  // no replica to wait for.
  const waitReplicas = settings.waitReplicas ?? (settings.sentinels ? 1 : 0)
  let connectedReplicas: number | undefined
  const acks = waitReplicas > 0
    ? replicaAcks(clients.persistence, { replicas: waitReplicas, timeoutMs: settings.waitTimeout, connectedReplicas: () => connectedReplicas })
    : undefined
  // The primary's replicas in sync, asked on FleetMQ's own connection (the persistence one is
  // blocked while a WAIT waits). Unknown (undefined) waits for `waitReplicas`, the safe side.
  const replicaPoll = acks === undefined ? undefined : setInterval(() => {
    clients.own.info('replication').then((info) => {
      // Online ones only: a replica still loading its full sync acknowledges nothing until it is done.
      connectedReplicas = /^role:master/m.test(info) ? (info.match(/^slave\d+:.*state=online/gm)?.length ?? 0) : undefined
    }, () => { connectedReplicas = undefined })
  }, REPLICA_POLL_MS)
  replicaPoll?.unref()
  const raw = persistenceRedis({ conn: clients.persistence, maxSessionDelivery: WHOLE_SESSION })
  const persistence = guardPersistence(raw, {
    // setup() hands the persistence the broker before any client connects.
    brokerId: () => aedesId ?? (raw as unknown as { broker?: { id?: string } }).broker?.id,
    ...(acks ? { replicated: acks.replicated } : {}),
    onError(op, err, ignored) {
      persistenceErrors++
      persistenceErrorsByOp[op] = (persistenceErrorsByOp[op] ?? 0) + 1
      lastError = `persistence ${op}: ${err.message}`
      // A write-refusing Redis fails every operation: one warning per operation per 10 s.
      const now = Date.now()
      if (now - (lastLogged.get(op) ?? 0) >= 10_000) {
        lastLogged.set(op, now)
        log.warn({ err, op, ignored, persistenceErrors }, `Redis refused a persistence operation (${op}): ${err.message}${ignored ? ' (ignored)' : ''}`)
      } else {
        log.debug({ err, op, ignored }, `persistence ${op} failed`)
      }
    },
  })

  log.info({ backend: 'redis', redis: where, waitReplicas }, `state in Redis at ${where}; ${waitReplicas > 0 ? `acknowledgements wait for ${waitReplicas} replica(s) (WAIT, ${settings.waitTimeout} ms)` : 'acknowledgements do not wait for replicas (cluster.redis.waitReplicas 0)'}`)

  return {
    aedesOptions: {
      persistence,
      mq: mq as unknown as AedesOptions['mq'],
      // aedes publishes the wills of a node that stopped heart-beating after 3 intervals: with
      // the membership interval (2 s) that is seconds, not aedes' default 3 minutes.
      heartbeatInterval: config.cluster.heartbeatInterval * 1000,
    },
    redis: clients.own,
    feature: {
      name: 'cluster-backend',
      authenticate(client) {
        // `client.clean` is false for 3.1.1 Clean Session 0 and for 5.0 Session Expiry > 0.
        if (!ready && client.clean === false) {
          throw serverUnavailable('Redis is unreachable: persistent sessions are refused until it is back')
        }
        return undefined
      },
    },
    status: () => ({
      kind: 'redis',
      ready,
      where,
      outages,
      errors,
      localOnlyPublishes,
      takeovers: takeover.count(),
      connections: Object.fromEntries(Object.entries(clients).map(([role, c]) => [role, c.status])),
      overloadDrops,
      pendingPublishes: pending + waiting.length,
      persistenceErrors,
      persistenceErrorsByOp: { ...persistenceErrorsByOp },
      fanout: mq.status(),
      congestions,
      memoryBoundHits,
      ...(acks ? { replicaAcks: acks.status() } : {}),
      ...(lastError ? { lastError } : {}),
    }),
    useMetrics(m) {
      metrics = m
    },
    attach(aedes) {
      aedesId = aedes.id
      aedesClients = clientsOf(aedes)
      takeover.attach(aedes)
      // aedes emits persistence failures as 'error' (missing from its types).
      ;(aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => {
        errors++
        lastError = `broker: ${err.message}`
        log.error({ err }, 'broker persistence error')
      })
    },
    async close() {
      closing = true
      clearInterval(sampler)
      clearInterval(replicaPoll)
      for (const { message, done } of waiting.splice(0)) send(message, done)
      // aedes.close() already closed mq (and with it the pub/sub clients) and the persistence.
      await Promise.all(Object.values(clients).map(async (c) => {
        if (c.status === 'end') return
        await c.quit().catch(() => c.disconnect())
      }))
    },
  }
}

/** Waits until the backend is ready or `timeoutMs` passed (start-up should not hang on Redis). */
export async function waitReady(backend: Backend, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!backend.status().ready && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  return backend.status().ready
}
