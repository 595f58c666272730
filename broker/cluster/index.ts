import type { IncomingMessage } from 'node:http'
import { createRequire } from 'node:module'
import { hostname } from 'node:os'
import type { ConfigTree } from '../config/env.js'
import { mergeTrees, validateConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import type { MergeReport } from '../auth/user-store.js'
import type { Route, RouteResult } from '../mgmt/http.js'
import type { FleetmqNode } from '../server.js'
import type { Metrics } from '../mgmt/metrics.js'
import { createRedisSharedGroups, type RedisSharedSubscriptionGroups } from '../shared/redis-groups.js'
import { describeFailure, mgmtBaseUrl, mgmtRequest, readCaFile, type MgmtAnswer } from '../mgmt/client.js'
import { createBackend, type Backend, type BackendStatus } from './backend.js'
import { signRequest, unseal, type SignedHeaders } from './signed-request.js'
import { descriptorFromConfig, parseDescriptor, planJoin, removeStoredCluster, storeDescriptor } from './descriptor.js'
import { drainClients } from './drain.js'
import { createMembership, type Membership, type NodeRecord, type NodeStatus } from './membership.js'
import { clusterRoutes, CLUSTER_API } from './routes.js'
import { MIN_SECRET_BYTES, readClusterSecret } from './secret.js'
import { hostSampler } from './host-stats.js'
import { localRpc, startNodeRpc, type NodeRpc, type RpcHandler } from './node-rpc.js'
import { createRedis, redisOptions } from './redis.js'

/*
 * The cluster, composed: the backend (Redis or memory), membership heartbeats, the management
 * routes (descriptor, status, join, leave) and two features — `cluster-guard` (first: refuses
 * connections while Redis is down or the node is leaving) and `cluster-stats` (last: counts the
 * messages in and out that membership reports).
 */

const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string }

export interface ClusterOptions {
  /** An admin user or the node's management token: the management API's own check. */
  readonly authorizeOperator?: (req: IncomingMessage) => Promise<boolean> | boolean
  /** What merging this node's users.json into the cluster's store found (shown by status and join). */
  readonly usersMerge?: () => MergeReport | undefined
  /** Replaces the running node by one built from `next` (after `cluster join`). */
  readonly restart: (next: Config) => Promise<void>
  /** Stops the process gracefully (after `cluster leave`). */
  readonly stop: () => void
}

export interface Readiness {
  readonly ready: boolean
  readonly backend: BackendStatus
  readonly leaving: boolean
}

export interface Cluster {
  readonly aedesOptions: Backend['aedesOptions']
  /** Runs first: refusals. */
  readonly guard: Feature
  /** Runs last: counters. */
  readonly stats: Feature
  readonly routes: Route[]
  readiness(): Readiness
  /** Hooks the backend to the broker: before the listeners open, so no client comes in unseen. */
  attachBroker(aedes: FleetmqNode['aedes']): void
  /** Starts membership once the node is bound. */
  attach(node: FleetmqNode): Promise<void>
  /** Cluster-wide shared subscription groups (Redis); undefined for a standalone node. */
  readonly sharedGroups: RedisSharedSubscriptionGroups | undefined
  /** Where the cluster reports dropped messages (overload). */
  useMetrics(metrics: Pick<Metrics, 'dropped'>): void
  /** This node's id in the cluster (final once attached). */
  nodeId(): string
  /** Every node known, this one first (only this one for a standalone node or while Redis is down). */
  nodes(): Promise<NodeStatus[]>
  /** The calls this node answers for the cluster (the management API's); set before `attach`. */
  answerCalls(handlers: Readonly<Record<string, RpcHandler>>): void
  /** Asks every node (cluster/node-rpc.ts); a standalone node asks itself. */
  rpc(): NodeRpc
}

const SEED_TIMEOUT_MS = 5_000

/** How this node reaches other nodes' management APIs: over https, verified against `ca`, when its own API speaks TLS. */
export interface PeerTls {
  readonly ca?: Buffer
}

/** The TLS a node's config implies for its calls to other nodes (`mgmt.tls`), or undefined. */
export function peerTls(config: Config): PeerTls | undefined {
  const tls = config.mgmt.tls
  if (!tls) return undefined
  return tls.ca ? { ca: readCaFile(tls.ca, 'mgmt.tls.ca') } : {}
}

/**
 * Fetches the descriptor from a seed, with errors that say what to do. `seed` is HOST[:PORT] or a
 * URL; https when it says so or when `tls` is given (a cluster's nodes are configured alike).
 */
export async function fetchDescriptor(seed: string, secret: string, tls?: PeerTls): Promise<ReturnType<typeof parseDescriptor>> {
  const url = `${mgmtBaseUrl(seed, tls !== undefined)}${CLUSTER_API}/descriptor`
  let res: MgmtAnswer
  let signed: SignedHeaders
  try {
    signed = signRequest(secret, 'GET', `${CLUSTER_API}/descriptor`)
    res = await mgmtRequest(url, { method: 'GET', headers: { authorization: signed.authorization }, ca: tls?.ca, timeoutMs: SEED_TIMEOUT_MS })
  } catch (err) {
    throw new FleetmqError('CLUSTER', `cannot reach the seed's management API at ${url} (${describeFailure(err)}); check the address and that the seed runs with its management API on a reachable interface (nothing was changed)`)
  }
  const body = res.body as { error?: string; sealed?: string }
  if (res.status === 401) throw new FleetmqError('CLUSTER', `the seed ${seed} refused the cluster secret; use the secret file of that cluster (nothing was changed): ${body.error ?? ''}`)
  if (res.status < 200 || res.status >= 300) throw new FleetmqError('CLUSTER', `the seed ${seed} answered ${res.status}: ${body.error ?? 'no reason given'} (nothing was changed)`)
  let descriptor: unknown
  try {
    descriptor = unseal(secret, signed.nonce, String(body.sealed))
  } catch (err) {
    throw new FleetmqError('CLUSTER', `the seed ${seed} answered with a descriptor not sealed for this request (${(err as Error).message}); is it a FleetMQ node of this version? (nothing was changed)`)
  }
  return parseDescriptor(descriptor)
}

export function createCluster(config: Config, log: Logger, options: ClusterOptions): Cluster {
  const settings = config.cluster
  const secret = settings.secretFile ? readClusterSecret(settings.secretFile) : undefined
  if (settings.redis && !secret) {
    log.warn('cluster.secretFile is not set: other nodes cannot join through this one (cluster join needs the secret)')
  }
  const backend = createBackend(config, log)
  const sharedGroups = backend.redis ? createRedisSharedGroups({ redis: backend.redis, cluster: settings.name, strategy: config.sharedSubscriptions.strategy, log }) : undefined
  const startedAt = Date.now()
  let node: FleetmqNode | undefined
  let membership: Membership | undefined
  let nodeId = settings.nodeId ?? `${hostname()}-${process.pid}`
  let leaving = false
  let msgIn = 0
  let msgOut = 0
  let rpcHandlers: Readonly<Record<string, RpcHandler>> = {}
  let rpc: NodeRpc | undefined
  const sampleHost = hostSampler()

  const addresses = (): { mgmt?: string; mqtt: string[] } => ({
    mgmt: settings.advertiseMgmt ?? (node?.mgmt ? `${node.mgmt.host}:${node.mgmt.port}` : undefined),
    mqtt: settings.advertiseMqtt ?? (node?.listeners ?? []).map((l) => `${l.host}:${l.port}`),
  })
  const snapshot = () => ({
    ...addresses(),
    version,
    pid: process.pid,
    startedAt,
    connections: node?.aedes.connectedClients ?? 0,
    msgInTotal: msgIn,
    msgOutTotal: msgOut,
    backendReady: backend.status().ready,
    system: sampleHost(),
  })
  const localStatus = (): NodeStatus => {
    const now = Date.now()
    const rec: NodeRecord = membership?.self() ?? { ...snapshot(), id: nodeId, host: hostname(), cluster: '', state: 'up', lastSeen: now, msgInRate: 0, msgOutRate: 0 }
    return { ...rec, health: leaving ? 'left' : 'up', self: true, lastSeenAgo: 0, uptime: Math.round((now - startedAt) / 1000) }
  }

  const usersMerge = (): { usersMerge?: MergeReport } => {
    const report = options.usersMerge?.()
    return report ? { usersMerge: report } : {}
  }

  /** Every node known; only this one when Redis cannot say, with the reason. */
  const knownNodes = async (): Promise<{ nodes: NodeStatus[]; error?: string }> => {
    if (membership && backend.status().ready) {
      try {
        return { nodes: await membership.nodes() }
      } catch (err) {
        return { nodes: [localStatus()], error: `membership unavailable: ${(err as Error).message}` }
      }
    }
    return { nodes: [localStatus()], ...(membership ? { error: 'Redis is unreachable from this node: only this node is shown' } : {}) }
  }

  const handlers = {
    descriptor: (): RouteResult => {
      if (!settings.redis) return { status: 409, body: { error: 'this node is standalone (no cluster.redis): join a node that is in a cluster' } }
      return { status: 200, body: descriptorFromConfig(config) }
    },
    async status(): Promise<RouteResult> {
      const { nodes, error } = await knownNodes()
      return {
        status: 200,
        body: { cluster: settings.redis ? settings.name : null, node: nodeId, backend: backend.status(), nodes, ...(error ? { error } : {}), ...usersMerge() },
      }
    },
    async join(body: unknown): Promise<RouteResult> {
      const { seed, secret: given } = (body ?? {}) as { seed?: unknown; secret?: unknown }
      if (typeof seed !== 'string' || seed.length === 0) return { status: 400, body: { error: 'give the seed as "seed": "HOST[:PORT]" (its management API)' } }
      if (typeof given !== 'string' || Buffer.byteLength(given) < MIN_SECRET_BYTES) {
        return { status: 400, body: { error: `give the cluster secret (at least ${MIN_SECRET_BYTES} bytes) as "secret"` } }
      }
      let descriptor
      try {
        descriptor = await fetchDescriptor(seed, given, peerTls(config))
      } catch (err) {
        return { status: 502, body: { error: (err as Error).message } }
      }
      const plan = planJoin(config, descriptor)
      if (plan.action === 'refuse') return { status: 409, body: { error: plan.reason } }
      if (plan.action === 'none') return { status: 200, body: { changed: false, cluster: descriptor.name, message: plan.reason } }
      const section = storeDescriptor(config.dataDir, descriptor, given)
      const current = JSON.parse(JSON.stringify(config)) as ConfigTree
      const result = validateConfig(mergeTrees(current, { cluster: section }))
      if (!result.ok) {
        removeStoredCluster(config.dataDir)
        return { status: 400, body: { error: `the descriptor from ${seed} does not make a valid config (nothing was changed): ${result.errors.join('; ')}` } }
      }
      log.info({ cluster: descriptor.name, seed }, `joining cluster "${descriptor.name}" through ${seed}: restarting into it`)
      // Answer first: the restart closes this management server.
      setTimeout(() => {
        options.restart(result.config).catch((err: unknown) => {
          log.fatal({ err }, `could not restart into cluster "${descriptor.name}": ${(err as Error).message}`)
          process.exit(1)
        })
      }, 100)
      return { status: 202, body: { changed: true, cluster: descriptor.name, storedIn: config.dataDir } }
    },
    async leave(): Promise<RouteResult> {
      if (!settings.redis) return { status: 409, body: { error: 'this node is not in a cluster; nothing to leave' } }
      if (!node) return { status: 503, body: { error: 'the node is still starting' } }
      leaving = true
      log.info('leaving the cluster: draining clients')
      const drained = await drainClients(node.aedes, config.serverReference)
      await membership?.leave().catch((err: Error) => log.warn({ err }, 'could not record the leave in Redis; the node will show as down'))
      const forgot = removeStoredCluster(config.dataDir)
      log.info({ ...drained, forgotStoredCluster: forgot }, `left cluster "${settings.name}": ${drained.redirected} 5.0 clients redirected, ${drained.closed} older clients closed; stopping`)
      setTimeout(options.stop, 100)
      return { status: 200, body: { left: true, cluster: settings.name, node: nodeId, ...drained, stopping: true } }
    },
  }

  return {
    aedesOptions: backend.aedesOptions,
    guard: {
      name: 'cluster-guard',
      authenticate(client, username, password) {
        if (leaving) throw Object.assign(new Error('this node is leaving the cluster'), { returnCode: 3 })
        return backend.feature.authenticate?.(client, username, password)
      },
      async close() {
        membership?.stop()
        await rpc?.close()
        await sharedGroups?.close()
        await backend.close()
      },
    },
    stats: {
      name: 'cluster-stats',
      published(packet) {
        if (!packet.topic.startsWith('$SYS')) msgIn++
      },
      authorizeForward(_client, packet) {
        msgOut++
        return packet
      },
    },
    routes: clusterRoutes(handlers, { secret, authorizeOperator: options.authorizeOperator, rate: settings.mgmtRate, burst: settings.mgmtBurst }),
    sharedGroups,
    useMetrics(metrics) {
      backend.useMetrics(metrics)
    },
    nodeId: () => nodeId,
    nodes: async () => (await knownNodes()).nodes,
    answerCalls(handlers) {
      rpcHandlers = handlers
    },
    rpc: () => rpc ?? localRpc(nodeId, rpcHandlers),
    readiness: () => {
      const status = backend.status()
      return { ready: status.ready && !leaving, backend: status, leaving }
    },
    attachBroker(aedes) {
      backend.attach(aedes)
    },
    async attach(running) {
      node = running
      if (!backend.redis) return
      if (!settings.nodeId && running.mgmt) nodeId = `${hostname()}-${running.mgmt.port}`
      membership = createMembership({
        redis: backend.redis,
        cluster: settings.name,
        nodeId,
        heartbeatInterval: settings.heartbeatInterval,
        downAfter: settings.downAfter,
        log,
        snapshot,
      })
      await membership.start()
      const options = redisOptions(settings.redis as NonNullable<typeof settings.redis>)
      rpc = startNodeRpc({ pub: createRedis(options, 'fleetmq-rpc'), sub: createRedis(options, 'fleetmq-rpc-sub'), cluster: settings.name, nodeId, handlers: rpcHandlers, log })
      log.info({ cluster: settings.name, node: nodeId }, `member of cluster "${settings.name}" as ${nodeId}`)
    },
  }
}
