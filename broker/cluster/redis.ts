import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Redis, RedisOptions } from 'ioredis'
import type { ClusterConfig } from '../config/schema.js'
import { FleetmqError } from '../errors.js'

/*
 * Redis connection settings from the `cluster.redis` section: one URL (redis:// or rediss:// with
 * a CA), or Sentinel (a list of sentinels plus the primary's name). Secrets come from files.
 */

export type RedisSettings = NonNullable<ClusterConfig['redis']>

function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new FleetmqError('CLUSTER', `cannot read the ${what} file ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check cluster.redis in the config`)
  }
}

/** Splits `host:port` / `[v6]:port`. */
export function splitHostPort(value: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value)
  if (!match) throw new FleetmqError('CLUSTER', `"${value}" is not HOST:PORT`)
  return { host: match[1] ?? match[2], port: Number(match[3]) }
}

/** ioredis options for `settings`; every FleetMQ Redis client is built from these. */
export function redisOptions(settings: RedisSettings): RedisOptions & { url?: string } {
  const common: RedisOptions = {
    // Reconnect for ever, backing off to 1 s: a failover takes seconds and a node must come back
    // by itself. Commands issued meanwhile wait in the offline queue for up to 20 attempts.
    retryStrategy: (times) => Math.min(times * 100, 1_000),
    maxRetriesPerRequest: 20,
    connectTimeout: 5_000,
    // A primary demoted to replica answers writes with READONLY: reconnect to find the new one.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  }
  if (settings.username) common.username = settings.username
  if (settings.passwordFile) common.password = readSecretFile(settings.passwordFile, 'Redis password')
  const ca = settings.tls?.caFile ? readSecretFile(settings.tls.caFile, 'Redis CA') : undefined
  if (settings.url) {
    const tls = settings.url.startsWith('rediss://') || ca !== undefined ? { ...(ca ? { ca } : {}) } : undefined
    return { ...common, url: settings.url, ...(tls ? { tls } : {}) }
  }
  const sentinels = (settings.sentinels ?? []).map(splitHostPort)
  return {
    ...common,
    sentinels,
    name: settings.name,
    ...(settings.sentinelPasswordFile ? { sentinelPassword: readSecretFile(settings.sentinelPasswordFile, 'sentinel password') } : {}),
    ...(ca ? { tls: { ca }, enableTLSForSentinelMode: true, sentinelTLS: { ca } } : {}),
    // Not `failoverDetector`: under failover tests here it left some clients ended for good.
    // The retry strategy asks the sentinels again within 1 s anyway.
    sentinelRetryStrategy: (times) => Math.min(times * 100, 1_000),
  }
}

// Loaded on first use: a standalone node never needs ioredis (≈ 20 MB of RSS and 0.2 s at start).
const require = createRequire(import.meta.url)
let RedisClass: typeof Redis | undefined

/** A new client; `url` options go through ioredis' URL parser. */
export function createRedis(options: RedisOptions & { url?: string }, connectionName: string): Redis {
  const { url, ...rest } = options
  const withName = { ...rest, connectionName }
  RedisClass ??= (require('ioredis') as typeof import('ioredis')).Redis
  return url ? new RedisClass(url, withName) : new RedisClass(withName)
}

/** Where to find Redis, for logs (no credentials). */
export function describeRedis(settings: RedisSettings): string {
  if (settings.url) {
    const url = new URL(settings.url)
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`
  }
  return `sentinel ${settings.name} via ${(settings.sentinels ?? []).join(',')}`
}

/**
 * A client for a one-shot command (`fleetmq user …`, `fleetmq acl …`), connected: it gives up
 * within about a second instead of retrying for ever, with an error naming Redis and the fix.
 */
export async function connectForCommand(settings: RedisSettings, connectionName: string, cluster: string): Promise<Redis> {
  const redis = createRedis({ ...redisOptions(settings), maxRetriesPerRequest: 1, retryStrategy: (times) => (times > 3 ? null : 250), lazyConnect: true }, connectionName)
  redis.on('error', () => undefined)
  try {
    await redis.connect()
    await redis.ping()
    return redis
  } catch (err) {
    redis.disconnect()
    throw new FleetmqError('CLUSTER', `cannot reach the Redis of cluster "${cluster}" at ${describeRedis(settings)} (${(err as Error).message}); the cluster's users and ACL live there: start Redis, or run the command on a node that reaches it`)
  }
}
