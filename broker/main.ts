import type { Config } from './config/schema.js'
import { createLogger, type Logger } from './log.js'
import { startNode, type FleetmqNode } from './server.js'
import { authFeature } from './auth/index.js'
import { healthRoutes } from './mgmt/health.js'

/*
 * A node from a validated config: the features in the order their hooks run, the management
 * routes, and the process signals (SIGTERM drains, SIGHUP reloads).
 */

export interface RunningNode extends FleetmqNode {
  readonly log: Logger
}

export async function runNode(config: Config, log: Logger = createLogger(config.log)): Promise<RunningNode> {
  const features = [authFeature(config, log)]
  const node = await startNode({
    config,
    log,
    features,
    routes: [...healthRoutes(() => node)],
  })
  return Object.assign(node, { log })
}

/** Ties the node's lifetime to the process: SIGTERM and SIGINT stop it within the configured bound. */
export function handleSignals(node: RunningNode, config: Config): void {
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    node.log.info({ signal }, `${signal}: stopping`)
    const deadline = setTimeout(() => {
      node.log.error(`could not stop within ${config.shutdownTimeout} s; exiting`)
      process.exit(1)
    }, config.shutdownTimeout * 1000)
    deadline.unref()
    node.close().then(() => {
      node.log.info('stopped')
      process.exit(0)
    }, (err: unknown) => {
      node.log.error({ err }, 'error while stopping')
      process.exit(1)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}
