import { Aedes, type AedesOptions } from 'aedes'
import type { Config } from './config/schema.js'
import type { Logger } from './log.js'
import { composeHooks, type Feature } from './hooks.js'
import { startListener, type BoundListener } from './listeners/index.js'
import { logClientConnections } from './features/connection-log.js'
import { startMgmtServer, type MgmtServer, type Principal, type Route } from './mgmt/http.js'
import { guardEmitter } from './limits/emitter-guard.js'
import { markRedeliveries } from './mqtt/redelivery.js'
import { sendQueuedMessagesOnResume } from './mqtt/session-resume.js'
import { capRetainedAtGranted } from './core/delivery.js'
import { checkPinnedVersions, emitterOf } from './core/aedes-adapter.js'
import { pubackAfterPublish } from './mqtt/puback-order.js'
import { installFastPublish } from './mqtt/fast-publish.js'
import { shutdownNode, trackConnections } from './features/shutdown.js'
import { tuneHeapGrowth } from './features/heap.js'

/*
 * Composition only: builds aedes with the features' hooks, binds the listeners and the management
 * API, and closes them in reverse order. Behaviour lives in the feature modules.
 */

export interface NodeParts {
  readonly config: Config
  readonly log: Logger
  /** Hook contributors, in the order their hooks run. */
  readonly features: readonly Feature[]
  /** Management API routes contributed by the features. */
  readonly routes?: readonly Route[]
  /** Who a request to a non-public management route authenticated as (undefined: refused). */
  readonly authorizeMgmt?: (req: import('node:http').IncomingMessage) => Promise<Principal | undefined> | Principal | undefined
  /** Extra aedes options (persistence, mq) from the backend. */
  readonly aedesOptions?: Partial<AedesOptions>
  /**
   * Called with the broker before the first listener opens: whatever watches aedes' events
   * (counters, the cluster backend) sees every client from the first.
   */
  readonly beforeListen?: (aedes: Aedes) => void
}

export interface FleetmqNode {
  readonly aedes: Aedes
  readonly listeners: readonly BoundListener[]
  readonly mgmt: MgmtServer | undefined
  close(): Promise<void>
}

/** Packets a client may send before its CONNACK, aedes' default. */
const PRE_CONNACK_QUEUE_LIMIT = 42

export function aedesLimits(config: Config): Partial<AedesOptions> {
  const { limits } = config
  return {
    connectTimeout: limits.connectTimeout * 1000,
    // Off: aedes would refuse Keep Alive 0 from 3.1.1 clients (return code 6) and impose a Server
    // Keep Alive on 5.0 clients asking for 0. limits/index.ts keepAliveVerdict bounds keep-alive.
    keepaliveLimit: 0,
    maxClientsIdLength: limits.maxClientIdLength,
    maxTopicLevels: limits.maxTopicLevels,
    topicAliasMaximum: limits.topicAliasMaximum,
    maximumPacketSize: limits.maxPacketSize,
    sessionExpiryIntervalLimit: limits.maxSessionExpiry,
    // aedes' queueLimit bounds the packets a client sends before its CONNACK (while authentication
    // and session restore run), not a subscriber's messages: aedes' own default. limits.maxQueued
    // and maxInflight apply per subscriber in limits/ (slow consumers) and mqtt/flow-control.ts.
    queueLimit: PRE_CONNACK_QUEUE_LIMIT,
  }
}

export async function startNode(parts: NodeParts): Promise<FleetmqNode> {
  const { config, log, features } = parts
  tuneHeapGrowth()
  // The patches in broker/ are written for exact versions of aedes and its codec and router.
  checkPinnedVersions()
  const aedes = await Aedes.createBroker({
    ...aedesLimits(config),
    ...parts.aedesOptions,
    ...composeHooks(features),
  })
  // Without it a stuck subscriber's disconnect overflows the stack (see emitter-guard.ts).
  guardEmitter(emitterOf(aedes))
  markRedeliveries(aedes)
  // Clean Start 0 with Session Expiry 0 still resumes the queued messages (session-resume.ts).
  sendQueuedMessagesOnResume(aedes)
  // Retained messages sent on SUBSCRIBE at the granted QoS [MQTT-3.8.4-8] (core/delivery.ts).
  capRetainedAtGranted(aedes)
  // [MQTT-4.3.2-4] the PUBACK once the message is stored and routed, not before (puback-order.ts).
  aedes.once('closed', pubackAfterPublish(aedes))
  // PUBLISH → authorize → publish → PUBACK without aedes' handler chain (fast-publish.ts).
  aedes.once('closed', installFastPublish(aedes))
  logClientConnections(aedes, log)
  parts.beforeListen?.(aedes)
  const listeners: BoundListener[] = []
  const connections = trackConnections()
  let mgmt: MgmtServer | undefined
  // A third of shutdownTimeout for each waiting step, so the whole drain stays within it.
  const close = (): Promise<void> =>
    shutdownNode({ aedes, listeners, mgmt, features, connections, log, graceMs: (config.shutdownTimeout * 1000) / 3 })
  try {
    for (const listener of config.listeners) {
      const bound = await startListener(listener, { log, limits: config.limits, handle: (stream, req) => { connections.track(stream); aedes.handle(stream, req) } })
      listeners.push(bound)
      log.info({ listener: bound.name, host: bound.host, port: bound.port }, `listening for ${bound.type} on ${bound.host}:${bound.port}`)
    }
    if (config.mgmt.enabled) {
      mgmt = await startMgmtServer({
        host: config.mgmt.host,
        port: config.mgmt.port,
        log,
        routes: parts.routes ?? [],
        allowedHosts: config.mgmt.allowedHosts,
        ...(config.mgmt.tls ? { tls: config.mgmt.tls } : {}),
        authorize: parts.authorizeMgmt ?? (() => undefined),
      })
      log.info({ host: mgmt.host, port: mgmt.port }, `management API on ${mgmt.url}`)
    }
  } catch (err) {
    await close()
    throw err
  }
  return { aedes, listeners, mgmt, close }
}
