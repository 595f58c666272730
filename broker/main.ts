import { readFileSync } from 'node:fs'
import type { Config } from './config/schema.js'
import { createLogger, type Logger } from './log.js'
import type { Feature } from './hooks.js'
import { startNode, type FleetmqNode } from './server.js'
import { authFeature } from './auth/index.js'
import { aclFeature } from './auth/acl.js'
import { healthRoutes } from './mgmt/health.js'
import { createCluster } from './cluster/index.js'
import { limitsFeature } from './limits/index.js'
import { createMetrics } from './mgmt/metrics.js'
import { sysFeature } from './sys/index.js'
import { mqttProtocolFeature } from './mqtt/index.js'
import { sharedSubscriptionsFeature } from './shared/index.js'
import { createLocalToken, writeLocalCa, type LocalToken } from './mgmt/local-token.js'
import { installLastResortHandler, uncaughtErrors } from './features/last-resort.js'
import { createRules } from './rules/index.js'
import { createManagementApi } from './api/index.js'
import { createDashboard } from './dashboard/index.js'
import type { Principal } from './mgmt/http.js'

/*
 * A node from a validated config: the features in the order their hooks run, the management
 * routes, and the process signals (SIGTERM drains, SIGHUP reloads).
 */

export interface RunningNode extends FleetmqNode {
  readonly log: Logger
  readonly features: readonly Feature[]
}

/**
 * @param target after `cluster join` the node restarts in place: the new node's parts are copied
 *   onto `target`, the object the signal handlers hold.
 * @param onListen called just before the first listener opens.
 */
export async function runNode(config: Config, log: Logger = createLogger(config.log), target?: RunningNode, onListen?: () => void): Promise<RunningNode> {
  // auth before acl: the ACL reads the identity authentication established.
  const auth = authFeature(config, log)
  const acl = aclFeature(config, log, auth.aclSource)
  // Before any listener opens: a node that joins a cluster admits its own users from the first
  // client, under the cluster's ACL.
  try {
    await auth.start()
    await acl.start()
  } catch (err) {
    await auth.close?.()
    throw err
  }
  const localToken = config.mgmt.enabled ? writeLocalToken(config, log) : undefined
  // Every non-health route takes this start's management token, an admin user or an API key, from
  // any address; the route's role decides what an API key may do.
  const principalOf = async (req: import('node:http').IncomingMessage): Promise<Principal | undefined> => {
    if (localToken?.matches(req) === true) return { kind: 'token', name: 'the node\'s management token', role: 'admin' }
    const admin = await auth.authorizeMgmt(req)
    if (admin) return { kind: 'user', name: admin.username, role: 'admin' }
    return api.authenticate(req)
  }
  // The dashboard's sign-in checks what the API checks; its session cookie is one more credential.
  const dashboard = createDashboard({ log, authenticate: principalOf, userRecord: (name) => auth.users.get(name) })
  const requestPrincipal = async (req: import('node:http').IncomingMessage): Promise<Principal | undefined> => (await principalOf(req)) ?? dashboard.sessionPrincipal(req)
  // The cluster guard first (refuses while Redis is down or the node leaves), its counters last.
  const cluster = createCluster(config, log, {
    authorizeOperator: async (req) => (await principalOf(req))?.role === 'admin',
    usersMerge: () => auth.mergeReport(),
    restart: async (next) => {
      const running = target ?? self
      await running.close()
      await runNode(next, log, running)
    },
    stop: () => process.kill(process.pid, 'SIGTERM'),
  })
  // limits before auth: refusing a connection storm must not cost a password hash per attempt;
  // metrics last: it counts what every other feature let through.
  const metrics = createMetrics()
  metrics.counterSource('fleetmq_persistence_errors_total', 'persistence operations Redis refused or failed (e.g. NOREPLICAS); the node keeps running', () => cluster.readiness().backend.persistenceErrors)
  metrics.counterSource('fleetmq_uncaught_errors_total', 'exceptions no handler caught; the node logged each and kept serving (a bug: report it)', uncaughtErrors)
  if (config.cluster.redis) {
    const backend = () => cluster.readiness().backend
    metrics.gaugeSource('fleetmq_memory_bound_bytes', 'cluster.maxMemory: the resident memory beyond which this node holds publishers cluster-wide', () => config.cluster.maxMemory)
    metrics.counterSource('fleetmq_memory_bound_hits_total', 'times this node\'s resident memory went over cluster.maxMemory', () => backend().memoryBoundHits ?? 0)
    metrics.counterSource('fleetmq_congestions_total', 'times this node\'s subscribers fell behind its bounds and publishers were held cluster-wide (backpressure)', () => backend().congestions ?? 0)
    metrics.gaugeSource('fleetmq_held_messages', 'published messages held on this node by backpressure (their PUBACK waits)', () => backend().fanout?.held ?? 0)
  }
  cluster.useMetrics(metrics)
  const api = createManagementApi(config, log, cluster)
  const limits = limitsFeature(config, log, metrics)
  const sys = sysFeature({ metrics, interval: config.sysInterval, log })
  const rules = createRules(config, log, metrics.registry, () => cluster.nodeId())
  // MQTT 5.0 gaps and shared subscriptions after the ACL: a subscription it refuses joins no group.
  // bans before auth: a banned client costs no password hash.
  const features = [cluster.guard, limits, api.feature, auth, acl, mqttProtocolFeature(config, log, { onQueueFull: (client, queued) => limits.queueFull(client, queued), onReceiveMaximumExceeded: (client, unacknowledged) => limits.receiveMaximumExceeded(client, unacknowledged) }), sharedSubscriptionsFeature(config, log, cluster.sharedGroups), ...(rules ? [rules.feature] : []), cluster.stats, sys, metrics.feature]
  const node = await startNode({
    config,
    log,
    features,
    // Prometheus scrapers may use a viewer API key.
    routes: [...healthRoutes(() => node, cluster.readiness), { ...metrics.route, role: 'viewer' }, ...cluster.routes, ...api.routes, ...dashboard.routes],
    authorizeMgmt: requestPrincipal,
    aedesOptions: cluster.aedesOptions,
    beforeListen: (aedes) => {
      metrics.observe(aedes)
      auth.attach(aedes)
      limits.observe(aedes)
      sys.attach(aedes)
      cluster.attachBroker(aedes)
      rules?.attach(aedes)
      api.attach(aedes)
      onListen?.()
    },
  })
  const self: RunningNode = Object.assign(target ?? node, node, { log, features })
  await cluster.attach(self)
  await api.start()
  // The last line of a start: everything is up (the cluster membership too) and signals apply.
  log.info({ listeners: self.listeners.map((l) => `${l.name} ${l.host}:${l.port}`), mgmt: self.mgmt ? `${self.mgmt.host}:${self.mgmt.port}` : null }, 'started')
  return self
}

/** The management token for `fleetmq` commands on this host; without it they need an admin user. */
function writeLocalToken(config: Config, log: Logger): LocalToken | undefined {
  try {
    const token = createLocalToken(config.dataDir)
    const tls = config.mgmt.tls
    writeLocalCa(config.dataDir, tls ? readFileSync(tls.ca ?? tls.cert) : undefined)
    log.debug({ file: token.file }, 'wrote the management token for fleetmq commands on this host')
    return token
  } catch (err) {
    log.warn(`${(err as Error).message}; until then fleetmq cluster commands on this host need an admin user`)
    return undefined
  }
}

/**
 * SIGHUP: every listener re-reads its TLS material and every feature with a `reload` re-reads its
 * files, for new connections; open connections stay up. A failure keeps the previous material.
 */
export async function reloadNode(node: RunningNode): Promise<void> {
  for (const listener of node.listeners) {
    try {
      await listener.reload()
      if (listener.secure) node.log.info({ listener: listener.name }, `${listener.name}: reloaded TLS material`)
    } catch (err) {
      node.log.error({ err, listener: listener.name }, `${listener.name}: could not reload TLS material, keeping the previous one: ${(err as Error).message}`)
    }
  }
  for (const feature of node.features) {
    if (!feature.reload) continue
    try {
      await feature.reload()
    } catch (err) {
      node.log.error({ err, feature: feature.name }, `${feature.name}: reload failed, keeping the previous state: ${(err as Error).message}`)
    }
  }
}

/** What `fleetmq start` tells the signal handlers about the start (see `handleSignals`). */
export interface StartSignals {
  /** Just before the first listener opens (`runNode`'s `onListen`). */
  listening(): void
  started(node: RunningNode): void
}

/**
 * Ties the node's lifetime to the process: SIGTERM and SIGINT stop it within the configured bound;
 * SIGHUP reloads (see `reloadNode`). Installed before the node starts: the listeners are up (and a
 * supervisor may signal) before `runNode` resolves, and a SIGHUP without a handler kills the
 * process. A SIGHUP while the node starts reloads once it has started. A stop signal before any
 * listener is open exits at once (there is nothing to drain, and a start waiting for Redis may take
 * long); after that, it drains the node once it has started. A failed start is reported by the
 * caller.
 */
export function handleSignals(config: Config, log: Logger): StartSignals {
  let node: RunningNode | undefined
  let listening = false
  let stopSignal: string | undefined
  let reloadPending = false
  const stop = (running: RunningNode, signal: string): void => {
    running.log.info({ signal }, `${signal}: stopping`)
    running.close().then(() => {
      running.log.info('stopped')
      process.exit(0)
    }, (err: unknown) => {
      running.log.error({ err }, 'error while stopping')
      process.exit(1)
    })
  }
  const onStop = (signal: string): void => {
    if (stopSignal !== undefined) return
    stopSignal = signal
    setTimeout(() => {
      log.error(node ? `could not stop within ${config.shutdownTimeout} s; exiting` : `still starting ${config.shutdownTimeout} s after ${signal}; exiting`)
      process.exit(1)
    }, config.shutdownTimeout * 1000).unref()
    if (node !== undefined) return stop(node, signal)
    if (!listening) {
      log.info({ signal }, `${signal}: stopped before any listener opened`)
      process.exit(0)
    }
    log.info({ signal }, `${signal}: stopping once the node has started`)
  }
  const onReload = (): void => {
    if (stopSignal !== undefined) return
    if (node !== undefined) void reloadNode(node)
    else reloadPending = true
  }
  installLastResortHandler(log)
  process.on('SIGTERM', () => onStop('SIGTERM'))
  process.on('SIGINT', () => onStop('SIGINT'))
  process.on('SIGHUP', onReload)
  return {
    listening: () => { listening = true },
    started(started) {
      node = started
      if (stopSignal !== undefined) stop(started, stopSignal)
      else if (reloadPending) void reloadNode(started)
    },
  }
}
