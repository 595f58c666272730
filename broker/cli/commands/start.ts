import { Command, Option } from 'commander'
import type { Config } from '../../config/schema.js'
import { FleetmqError } from '../../errors.js'
import type { ConfigTree } from '../../config/env.js'
import { loadConfig, mergeTrees, readConfigFile } from '../../config/load.js'
import { readStoredCluster } from '../../cluster/descriptor.js'
import { parseHostPort, type HostPort } from '../options.js'

interface StartOptions {
  config?: string
  mqtt?: HostPort[]
  mgmt?: HostPort
  allowAnonymous?: boolean
  dataDir?: string
  logLevel?: string
  logFormat?: string
  redis?: string
  clusterSecretFile?: string
}

const collectHostPort = (value: string, previous: HostPort[] = []): HostPort[] => [...previous, parseHostPort(value)]

/** The settings the flags carry, as a config tree layered over the file and the environment. */
export function flagsToConfig(options: StartOptions, fileListeners: readonly unknown[] | undefined): ConfigTree {
  const tree: ConfigTree = {}
  if (options.mqtt) {
    // --mqtt replaces the mqtt listeners of the file and keeps its other listeners.
    const others = (fileListeners ?? []).filter((l) => (l as { type?: string }).type !== 'mqtt') as ConfigTree[]
    tree.listeners = [...options.mqtt.map(({ host, port }) => ({ type: 'mqtt', host, port })), ...others]
  }
  if (options.mgmt) tree.mgmt = { host: options.mgmt.host, port: options.mgmt.port }
  if (options.allowAnonymous) tree.allowAnonymous = true
  if (options.dataDir) tree.dataDir = options.dataDir
  if (options.logLevel || options.logFormat) tree.log = { level: options.logLevel, format: options.logFormat }
  if (options.redis || options.clusterSecretFile) tree.cluster = { redis: options.redis ? { url: options.redis } : undefined, secretFile: options.clusterSecretFile }
  return tree
}

export const startCommand = new Command('start')
  .description('run a FleetMQ node in the foreground (SIGTERM drains and stops it, SIGHUP reloads TLS and users)')
  .option('-c, --config <file>', 'YAML or JSON config file (FLEETMQ_CONFIG)')
  .option('--mqtt <host:port>', 'MQTT (TCP) listener; repeat for several; replaces the mqtt listeners of the config', collectHostPort)
  .option('--mgmt <host:port>', 'management API address (default 127.0.0.1:18083)', parseHostPort)
  .option('--allow-anonymous', 'accept clients without credentials (development only)')
  .option('--data-dir <dir>', 'folder for the user store and local state (default /var/lib/fleetmq)')
  .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
  .addOption(new Option('--log-format <format>', 'log format').choices(['auto', 'json', 'pretty']))
  .option('--redis <url>', 'cluster backend: redis:// or rediss:// URL (sessions, retained, fan-out in Redis)')
  .option('--cluster-secret-file <file>', 'file holding the cluster secret (≥ 32 bytes) that other nodes join with')
  .action(async (options: StartOptions) => {
    const file = options.config ?? process.env.FLEETMQ_CONFIG
    const fileListeners = file ? (readConfigFile(file).listeners as unknown[] | undefined) : undefined
    const flags = flagsToConfig(options, fileListeners)
    let config = loadConfig({ file, env: process.env, flags })
    // What `cluster join` stored in the dataDir: above the file and FLEETMQ_*, below the flags.
    const stored = readStoredCluster(config.dataDir)
    if (Object.keys(stored).length > 0) config = loadConfig({ file, env: process.env, flags: mergeTrees(stored, flags) })
    // Loaded here, not at the top: every other command starts without the broker's modules.
    const { handleSignals, runNode } = await import('../../main.js')
    const { createLogger } = await import('../../log.js')
    const log = createLogger(config.log)
    const signals = handleSignals(config, log)
    signals.started(await runNode(config, log, undefined, signals.listening).catch(async (err: unknown) => {
      throw await explainStartFailure(err, config)
    }))
  })

/**
 * ioredis gives up on a command after `maxRetriesPerRequest` attempts with a message that names
 * neither Redis nor the fix; at start that means Redis did not answer at all.
 */
async function explainStartFailure(err: unknown, config: Config): Promise<unknown> {
  const redis = config.cluster.redis
  if (redis === undefined || (err as Error | undefined)?.name !== 'MaxRetriesPerRequestError') return err
  const { describeRedis } = await import('../../cluster/redis.js')
  return new FleetmqError('CLUSTER',
    `Redis at ${describeRedis(redis)} did not answer while the node started (${(err as Error).message.replace(/\.? Refer to .*$/, '')}); ` +
    'start Redis or correct cluster.redis (--redis); under systemd the node starts again by itself and joins once Redis answers')
}
