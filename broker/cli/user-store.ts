import type { Command } from 'commander'
import { readFileSync } from 'node:fs'
import { readEnvFile, type ConfigTree } from '../config/env.js'
import { FleetmqError } from '../errors.js'
import { loadConfig, mergeTrees } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { readStoredCluster } from '../cluster/descriptor.js'
import { fileUserAdmin, openUserAdmin, type UserAdmin } from '../auth/user-store.js'

/*
 * How `fleetmq user …` finds the store it edits, shared by its subcommands: a clustered node's
 * users are the cluster's (in its Redis, found through the config or what `cluster join` stored in
 * the dataDir), a standalone node's are its users.json.
 */

export interface StoreOptions {
  config?: string
  dataDir?: string
  usersFile?: string
  redis?: string
  envFile?: string
  json?: boolean
}

function readNodeEnv(file: string): Record<string, string> {
  try {
    return readEnvFile(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new FleetmqError('FLAG_INVALID', `cannot read --env-file ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give the node's environment file (run as root on a provisioned host)`)
  }
}

/** The node's config as `start` resolves it: the file, FLEETMQ_*, what `cluster join` stored in the dataDir, then the flags. */
export function resolveConfig(options: StoreOptions, env: NodeJS.ProcessEnv = process.env): Config {
  const flags: ConfigTree = {}
  if (options.dataDir) flags.dataDir = options.dataDir
  if (options.redis) flags.cluster = { redis: { url: options.redis } }
  if (options.envFile) env = { ...env, ...readNodeEnv(options.envFile) }
  const file = options.config ?? env.FLEETMQ_CONFIG
  const config = loadConfig({ file, env, flags })
  const stored = readStoredCluster(config.dataDir)
  return Object.keys(stored).length > 0 ? loadConfig({ file, env, flags: mergeTrees(stored, flags) }) : config
}

/** The store a command edits: --users-file, else the cluster's on a clustered node, else the node's users.json. */
export async function openStore(options: StoreOptions, env: NodeJS.ProcessEnv = process.env): Promise<UserAdmin> {
  if (options.usersFile) return fileUserAdmin(options.usersFile)
  return openUserAdmin(resolveConfig(options, env))
}

/** Runs `action` on the store and closes it (a Redis connection would keep the command alive). */
export async function withStore<T>(options: StoreOptions, action: (store: UserAdmin) => Promise<T>): Promise<T> {
  const store = await openStore(options)
  try {
    return await action(store)
  } finally {
    await store.close()
  }
}

/** Said after every change: nodes apply it by themselves (file watch, or the cluster's change message). */
export const APPLIES_HINT = 'running nodes apply it within seconds'

export function withStoreOptions(command: Command): Command {
  return command
    .option('-c, --config <file>', 'YAML or JSON config file whose dataDir/usersFile/cluster locate the store (FLEETMQ_CONFIG)')
    .option('--data-dir <dir>', 'the node\'s data folder: its users.json, or the cluster it joined (default /var/lib/fleetmq)')
    .option('--env-file <file>', 'the node\'s FLEETMQ_* environment file (provisioned hosts: /etc/fleetmq/fleetmq.env)')
    .option('--redis <url>', 'the cluster\'s Redis (redis:// or rediss://), for a node started with --redis')
    .option('--users-file <file>', 'a users.json to edit, whatever the node is (overrides the others)')
    .option('--json', 'print the result as JSON')
}

