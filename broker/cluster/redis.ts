import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ConnectionOptions } from 'node:tls'
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

function readTlsFile(settings: RedisSettings, field: 'caFile' | 'certFile' | 'keyFile', what: string): string {
  const file = settings.tls?.[field] as string
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new FleetmqError('TLS_MATERIAL', `cannot read cluster.redis.tls.${field} ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); correct the path (FLEETMQ_CLUSTER__REDIS__TLS__${field.replace(/File$/, '_FILE').toUpperCase()}) and let the broker's user read it`)
  }
  try {
    if (field === 'keyFile') createPrivateKey(text)
    else new X509Certificate(text)
  } catch (err) {
    throw new FleetmqError('TLS_MATERIAL', `cluster.redis.tls.${field} ${file} is not ${what} (${(err as Error).message}); give the PEM file`)
  }
  return text
}

/**
 * TLS options for every connection to Redis and the sentinels, or undefined without
 * `cluster.redis.tls`. Certificates are verified against `caFile` (Node's default: reject an
 * unverified peer), and the peer's name against the address connected to or `serverName`.
 */
export function redisTlsOptions(settings: RedisSettings): ConnectionOptions | undefined {
  const config = settings.tls
  if (!config) return undefined
  return {
    ...(config.caFile ? { ca: readTlsFile(settings, 'caFile', 'a PEM CA certificate') } : {}),
    ...(config.certFile ? { cert: readTlsFile(settings, 'certFile', 'a PEM certificate') } : {}),
    ...(config.keyFile ? { key: readTlsFile(settings, 'keyFile', 'a PEM private key (an encrypted key is not supported)') } : {}),
    // Node checks the certificate against `servername` when given, else against the host.
    ...(config.serverName ? { servername: config.serverName } : {}),
    minVersion: 'TLSv1.2',
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
  const tls = redisTlsOptions(settings)
  if (settings.url) {
    const wantsTls = settings.url.startsWith('rediss://') || tls !== undefined
    return { ...common, url: settings.url, ...(wantsTls ? { tls: tls ?? {} } : {}) }
  }
  const sentinels = (settings.sentinels ?? []).map(splitHostPort)
  return {
    ...common,
    sentinels,
    name: settings.name,
    ...(settings.sentinelPasswordFile ? { sentinelPassword: readSecretFile(settings.sentinelPasswordFile, 'sentinel password') } : {}),
    // The sentinels and the Redis servers they name speak TLS alike (`tls-port`, `port 0`):
    // `sentinelTLS` for the questions to the sentinels, `tls` with enableTLSForSentinelMode for
    // the primary they answer with.
    ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
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
