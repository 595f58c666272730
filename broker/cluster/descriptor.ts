import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ConfigTree } from '../config/env.js'
import type { Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'

/*
 * The cluster descriptor: what a new node needs to become a member (the cluster name and how to
 * reach Redis, credentials and CA included). A seed serves it to holders of the cluster secret;
 * `cluster join` stores it in the joining node's dataDir:
 *
 *   <dataDir>/cluster.json        the `cluster` config section (0600)
 *   <dataDir>/cluster.secret      the cluster secret (0600)
 *   <dataDir>/redis.password      the Redis password, when there is one (0600)
 *   <dataDir>/redis-sentinel.password, <dataDir>/redis-ca.pem   likewise
 *
 * `fleetmq start` merges cluster.json above the config file and FLEETMQ_* variables and below
 * command-line flags (see docs/cluster.md).
 */

export interface ClusterDescriptor {
  readonly name: string
  readonly redis: {
    readonly url?: string
    readonly sentinels?: readonly string[]
    readonly name?: string
    readonly username?: string
    readonly password?: string
    readonly sentinelPassword?: string
    /** PEM CA of the Redis certificates (public; each node's own certificate and key never travel). */
    readonly ca?: string
    readonly serverName?: string
  }
}

export const STORED_CLUSTER_FILE = 'cluster.json'

const readOptional = (file: string | undefined): string | undefined => (file ? readFileSync(file, 'utf8').trim() : undefined)

/** The descriptor of the cluster `config` belongs to (secrets read from their files). */
export function descriptorFromConfig(config: Config): ClusterDescriptor {
  const redis = config.cluster.redis
  if (!redis) throw new FleetmqError('CLUSTER', 'this node is not in a cluster (no cluster.redis configured)')
  const ca = redis.tls?.caFile ? readFileSync(redis.tls.caFile, 'utf8') : undefined
  return {
    name: config.cluster.name,
    redis: {
      ...(redis.url ? { url: redis.url } : { sentinels: redis.sentinels, name: redis.name }),
      ...(redis.username ? { username: redis.username } : {}),
      ...(redis.passwordFile ? { password: readOptional(redis.passwordFile) } : {}),
      ...(redis.sentinelPasswordFile ? { sentinelPassword: readOptional(redis.sentinelPasswordFile) } : {}),
      ...(ca ? { ca } : {}),
      ...(redis.tls?.serverName ? { serverName: redis.tls.serverName } : {}),
    },
  }
}

/** Checks a descriptor received from a seed; throws naming what is wrong. */
export function parseDescriptor(value: unknown): ClusterDescriptor {
  const d = value as Partial<ClusterDescriptor> | null
  const ok = d && typeof d.name === 'string' && typeof d.redis === 'object' && d.redis !== null &&
    (typeof d.redis.url === 'string' || (Array.isArray(d.redis.sentinels) && typeof d.redis.name === 'string'))
  if (!ok) throw new FleetmqError('CLUSTER', 'the seed answered with something that is not a cluster descriptor; is it a FleetMQ node of the same version?')
  return d as ClusterDescriptor
}

export type JoinPlan =
  | { readonly action: 'join' }
  | { readonly action: 'none'; readonly reason: string }
  | { readonly action: 'refuse'; readonly reason: string }

/** What joining `descriptor` means for a node running `config`. */
export function planJoin(config: Config, descriptor: ClusterDescriptor): JoinPlan {
  if (!config.cluster.redis) return { action: 'join' }
  if (config.cluster.name === descriptor.name) {
    return { action: 'none', reason: `this node is already a member of cluster "${descriptor.name}"` }
  }
  return {
    action: 'refuse',
    reason: `this node is already in cluster "${config.cluster.name}", not "${descriptor.name}"; run fleetmq cluster leave on it first (nothing was changed)`,
  }
}

function writePrivate(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode: 0o600 })
  renameSync(tmp, file)
}

/** Writes the descriptor and the secret into `dataDir`; returns the `cluster` config section. */
export function storeDescriptor(dataDir: string, descriptor: ClusterDescriptor, secret: string): ConfigTree {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const path = (name: string): string => join(dataDir, name)
  const { redis } = descriptor
  const section: ConfigTree = {
    name: descriptor.name,
    secretFile: path('cluster.secret'),
    redis: {
      ...(redis.url ? { url: redis.url } : { sentinels: [...(redis.sentinels ?? [])], name: redis.name }),
      ...(redis.username ? { username: redis.username } : {}),
      ...(redis.password ? { passwordFile: path('redis.password') } : {}),
      ...(redis.sentinelPassword ? { sentinelPasswordFile: path('redis-sentinel.password') } : {}),
      ...(redis.ca || redis.serverName ? { tls: { ...(redis.ca ? { caFile: path('redis-ca.pem') } : {}), ...(redis.serverName ? { serverName: redis.serverName } : {}) } } : {}),
    },
  }
  writePrivate(path('cluster.secret'), `${secret}\n`)
  if (redis.password) writePrivate(path('redis.password'), `${redis.password}\n`)
  if (redis.sentinelPassword) writePrivate(path('redis-sentinel.password'), `${redis.sentinelPassword}\n`)
  if (redis.ca) writePrivate(path('redis-ca.pem'), redis.ca)
  writePrivate(path(STORED_CLUSTER_FILE), `${JSON.stringify({ cluster: section }, null, 2)}\n`)
  return section
}

/** The settings stored by `cluster join` (`{ cluster: … }`), or an empty tree. */
export function readStoredCluster(dataDir: string): ConfigTree {
  const file = join(dataDir, STORED_CLUSTER_FILE)
  if (!existsSync(file)) return {}
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as ConfigTree
  } catch (err) {
    throw new FleetmqError('CONFIG_INVALID', `${file} (written by fleetmq cluster join) is not valid JSON: ${(err as Error).message}; remove it and join again`)
  }
}

/** Forgets the stored cluster (after `cluster leave`); returns whether there was one. */
export function removeStoredCluster(dataDir: string): boolean {
  const file = join(dataDir, STORED_CLUSTER_FILE)
  if (!existsSync(file)) return false
  rmSync(file)
  for (const name of ['cluster.secret', 'redis.password', 'redis-sentinel.password', 'redis-ca.pem']) rmSync(join(dataDir, name), { force: true })
  return true
}
