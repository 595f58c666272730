import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { waitForPort, type ProcessGroup } from './processes.js'

/*
 * Redis as production runs it by default: a primary, replicas, and a Sentinel beside each, quorum
 * 2. Roles are laid out afresh at every start (the first Redis is the primary); the data folders
 * persist between starts.
 */

export const SENTINEL_PRIMARY_NAME = 'fleetmq'

export interface RedisLayout {
  readonly redisPorts: readonly number[]
  readonly sentinelPorts: readonly number[]
  readonly password: string
}

function redisArgs(port: number, dir: string, password: string, primaryPort: number | undefined): string[] {
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'no',
    '--requirepass', password, '--masterauth', password,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '',
    // Replicas sync at once instead of after the default 5 s batching delay.
    '--repl-diskless-sync-delay', '0',
    // An acknowledged write must have reached a replica within 10 s, or the primary refuses it:
    // bounds what an asynchronous failover can lose, at the cost of refusing writes with no replica.
    '--min-replicas-to-write', '1', '--min-replicas-max-lag', '10',
    // Full memory refuses writes (OOM, counted by the nodes) rather than evicting sessions, queued
    // messages or retained ones, which every other policy would do silently.
    '--maxmemory', '256mb', '--maxmemory-policy', 'noeviction',
  ]
  return primaryPort === undefined ? args : [...args, '--replicaof', '127.0.0.1', String(primaryPort)]
}

function sentinelConfig(port: number, dir: string, primaryPort: number, password: string): string {
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    `sentinel monitor ${SENTINEL_PRIMARY_NAME} 127.0.0.1 ${primaryPort} 2`,
    `sentinel auth-pass ${SENTINEL_PRIMARY_NAME} ${password}`,
    `sentinel down-after-milliseconds ${SENTINEL_PRIMARY_NAME} 1000`,
    `sentinel failover-timeout ${SENTINEL_PRIMARY_NAME} 5000`,
    '',
  ].join('\n')
}

/**
 * The primary refuses writes until `min-replicas-to-write` replicas are in sync: wait for them, so
 * the first node's first write does not meet NOREPLICAS.
 */
async function waitForReplicas(port: number, password: string, count: number, timeoutMs = 20_000): Promise<void> {
  const redis = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const info = await redis.info('replication')
      const online = info.split('\n').filter((line) => /^slave\d+:.*state=online/.test(line)).length
      if (online >= count) return
      if (Date.now() > deadline) throw new Error(`only ${online} of ${count} Redis replicas in sync with the primary after ${timeoutMs} ms; see the redis logs`)
      await new Promise((r) => setTimeout(r, 100))
    }
  } finally {
    redis.disconnect()
  }
}

export async function startRedis(group: ProcessGroup, stateDir: string, layout: RedisLayout, progress: (msg: string) => void): Promise<void> {
  const [primaryPort] = layout.redisPorts
  for (const [i, port] of layout.redisPorts.entries()) {
    const dir = join(stateDir, 'redis', `redis-${i + 1}`)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const managed = group.start(`redis-${i + 1}`, 'redis-server', redisArgs(port, dir, layout.password, i === 0 ? undefined : primaryPort))
    await waitForPort(port, 10_000, managed.child)
    progress(`redis-${i + 1} ${i === 0 ? 'primary' : 'replica'} on 127.0.0.1:${port}`)
  }
  await waitForReplicas(primaryPort, layout.password, layout.redisPorts.length - 1)
  for (const [i, port] of layout.sentinelPorts.entries()) {
    const dir = join(stateDir, 'redis', `sentinel-${i + 1}`)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const conf = join(dir, 'sentinel.conf')
    // Sentinel rewrites its file as it learns the topology: write it afresh at every start.
    writeFileSync(conf, sentinelConfig(port, dir, primaryPort, layout.password), { mode: 0o600 })
    const managed = group.start(`sentinel-${i + 1}`, 'redis-sentinel', [conf])
    await waitForPort(port, 10_000, managed.child)
  }
  progress(`${layout.sentinelPorts.length} sentinels watching primary "${SENTINEL_PRIMARY_NAME}"`)
}
