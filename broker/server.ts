import { Aedes, type AedesOptions } from 'aedes'
import type { Config } from './config/schema.js'
import type { Logger } from './log.js'
import { composeHooks, type Feature } from './hooks.js'
import { startListener, type BoundListener } from './listeners/index.js'
import { startMgmtServer, type MgmtServer, type Route } from './mgmt/http.js'

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
  /** Credential check for non-public management routes. */
  readonly authorizeMgmt?: (req: import('node:http').IncomingMessage) => Promise<boolean> | boolean
  /** Extra aedes options (persistence, mq) from the backend. */
  readonly aedesOptions?: Partial<AedesOptions>
}

export interface FleetmqNode {
  readonly aedes: Aedes
  readonly listeners: readonly BoundListener[]
  readonly mgmt: MgmtServer | undefined
  close(): Promise<void>
}

export function aedesLimits(config: Config): Partial<AedesOptions> {
  const { limits } = config
  return {
    connectTimeout: limits.connectTimeout * 1000,
    keepaliveLimit: limits.maxKeepAlive,
    maxClientsIdLength: limits.maxClientIdLength,
    maxTopicLevels: limits.maxTopicLevels,
    topicAliasMaximum: limits.topicAliasMaximum,
    maximumPacketSize: limits.maxPacketSize,
    sessionExpiryIntervalLimit: limits.maxSessionExpiry,
    queueLimit: limits.maxQueued,
  }
}

export async function startNode(parts: NodeParts): Promise<FleetmqNode> {
  const { config, log, features } = parts
  const aedes = await Aedes.createBroker({
    ...aedesLimits(config),
    ...parts.aedesOptions,
    ...composeHooks(features),
  })
  const listeners: BoundListener[] = []
  let mgmt: MgmtServer | undefined
  const close = async (): Promise<void> => {
    await Promise.all(listeners.map((l) => l.close()))
    await mgmt?.close()
    await new Promise<void>((resolve) => aedes.close(() => resolve()))
    for (const feature of [...features].reverse()) await feature.close?.()
  }
  try {
    for (const listener of config.listeners) {
      const bound = await startListener(listener, { log, handle: (stream, req) => aedes.handle(stream, req) })
      listeners.push(bound)
      log.info({ listener: bound.name, host: bound.host, port: bound.port }, `listening for ${bound.type} on ${bound.host}:${bound.port}`)
    }
    if (config.mgmt.enabled) {
      mgmt = await startMgmtServer({
        host: config.mgmt.host,
        port: config.mgmt.port,
        log,
        routes: parts.routes ?? [],
        authorize: parts.authorizeMgmt ?? (() => false),
      })
      log.info({ host: mgmt.host, port: mgmt.port }, `management API on http://${mgmt.host}:${mgmt.port}`)
    }
  } catch (err) {
    await close()
    throw err
  }
  return { aedes, listeners, mgmt, close }
}
