import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

/*
 * Real `redis-server` and `redis-sentinel` processes (Debian packages) on free loopback ports, each
 * in its own temp folder, stopped by PID. Used by the cluster tests and by `npm start`.
 */

const run = promisify(execFile)

export interface RedisProcess {
  readonly port: number
  readonly pid: number
  readonly dir: string
  readonly process: ChildProcess
  /** SIGTERM, then waits for exit. */
  stop(): Promise<void>
  /** SIGKILL, as a crash; waits for exit. */
  kill9(): Promise<void>
}

export interface RedisServer extends RedisProcess {
  readonly url: string
}

/** A free TCP port on 127.0.0.1 (redis cannot bind port 0). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * TLS of a Redis process (PEM files): served on its port (`port 0`, `tls-port`), used for
 * replication and by sentinels (`tls-replication yes`). `authClients` is `tls-auth-clients`.
 */
export interface RedisTls {
  readonly ca: string
  readonly cert: string
  readonly key: string
  readonly authClients?: 'yes' | 'no' | 'optional'
}

/** Server arguments (or sentinel.conf lines) serving `port` over TLS only. */
function tlsDirectives(port: number, tls: RedisTls): [string, string][] {
  return [
    ['port', '0'], ['tls-port', String(port)],
    ['tls-cert-file', tls.cert], ['tls-key-file', tls.key], ['tls-ca-cert-file', tls.ca],
    ['tls-replication', 'yes'], ['tls-auth-clients', tls.authClients ?? 'optional'],
  ]
}

/** `redis-cli` arguments for a TLS server: verified against the CA, with the client certificate. */
export const redisCliTlsArgs = (tls: RedisTls): string[] => ['--tls', '--cacert', tls.ca, '--cert', tls.cert, '--key', tls.key]

/** Runs `redis-cli -p PORT args…` and returns its trimmed output. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5_000 })
  return stdout.trim()
}

/** `redisCli` over TLS when `tls` is given. */
export async function redisCliOver(tls: RedisTls | undefined, port: number, ...args: string[]): Promise<string> {
  return tls ? redisCli(port, ...redisCliTlsArgs(tls), ...args) : redisCli(port, ...args)
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if (await check()) return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

function wrap(child: ChildProcess, port: number, dir: string): RedisProcess {
  const exited = once(child, 'exit')
  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    process.kill(child.pid as number, sig)
    await exited
  }
  return { port, pid: child.pid as number, dir, process: child, stop: () => signal('SIGTERM'), kill9: () => signal('SIGKILL') }
}

export interface RedisOptions {
  /** A fixed port (to bring a stopped server back at the same address); default a free one. */
  port?: number
  /** Start as a replica of this port. */
  replicaOf?: number
  /** Extra `--name value` arguments, e.g. `['--min-replicas-to-write', '1']`. */
  args?: string[]
  /** Serve TLS only, and replicate over TLS. */
  tls?: RedisTls
}

/** A `redis-server` in the foreground, without disk persistence, ready to answer PING. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const port = options.port ?? await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-redis-'))
  const args = ['--bind', '127.0.0.1', '--daemonize', 'no', '--dir', dir, '--save', '', '--appendonly', 'no', '--logfile', join(dir, 'redis.log')]
  if (options.tls) args.push(...tlsDirectives(port, options.tls).flatMap(([name, value]) => [`--${name}`, value]))
  else args.push('--port', String(port))
  if (options.replicaOf !== undefined) args.push('--replicaof', '127.0.0.1', String(options.replicaOf))
  args.push(...(options.args ?? []))
  const child = spawn('redis-server', args, { stdio: 'ignore' })
  const proc = wrap(child, port, dir)
  await waitFor(`redis-server on ${port}`, async () => (await redisCliOver(options.tls, port, 'PING')) === 'PONG')
  return { ...proc, url: `${options.tls ? 'rediss' : 'redis'}://127.0.0.1:${port}` }
}

export interface SentinelGroup {
  readonly name: string
  readonly servers: RedisServer[]
  readonly sentinels: RedisProcess[]
  /** `host:port` of every sentinel, as the cluster config takes them. */
  readonly sentinelAddresses: string[]
  /** The port of the primary the sentinels currently name. */
  primaryPort(): Promise<number>
  stop(): Promise<void>
}

export interface SentinelOptions {
  replicas?: number
  sentinels?: number
  /** Extra arguments for every redis-server (e.g. min-replicas-to-write). */
  serverArgs?: string[]
  /** Servers and sentinels speak TLS only, replication and sentinel links included. */
  tls?: RedisTls
}

/**
 * A primary, replicas and sentinels (quorum 2, down after 1 s): after `kill9()` of the primary a
 * replica is promoted in about 2–3 s (HOSTS.md).
 */
export async function startSentinelGroup(options: SentinelOptions = {}): Promise<SentinelGroup> {
  const name = 'fleetmq'
  const { tls } = options
  const primary = await startRedis({ args: options.serverArgs, tls })
  const servers = [primary]
  for (let i = 0; i < (options.replicas ?? 2); i++) {
    servers.push(await startRedis({ replicaOf: primary.port, args: options.serverArgs, tls }))
  }
  await waitFor('replicas in sync', async () => {
    const info = await redisCliOver(tls, primary.port, 'INFO', 'replication')
    return (info.match(/^slave\d+:.*state=online/gm)?.length ?? 0) === servers.length - 1
  })
  const sentinels: RedisProcess[] = []
  const count = options.sentinels ?? 3
  for (let i = 0; i < count; i++) {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), 'fleetmq-sentinel-'))
    const file = join(dir, 'sentinel.conf')
    writeFileSync(file, [
      ...(tls ? tlsDirectives(port, tls).map(([name, value]) => `${name} ${value}`) : [`port ${port}`]),
      'bind 127.0.0.1',
      'daemonize no',
      `dir ${dir}`,
      `logfile ${join(dir, 'sentinel.log')}`,
      `sentinel monitor ${name} 127.0.0.1 ${primary.port} 2`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 5000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'))
    const child = spawn('redis-sentinel', [file], { stdio: 'ignore' })
    sentinels.push(wrap(child, port, dir))
  }
  await waitFor('sentinels', async () => {
    for (const s of sentinels) {
      const others = await redisCliOver(tls, s.port, 'SENTINEL', 'sentinels', name)
      if ((others.match(/^runid$/gm)?.length ?? 0) < count - 1) return false
    }
    return true
  }, 20_000)
  const primaryPort = async (): Promise<number> => {
    for (const s of sentinels) {
      if (s.process.exitCode !== null) continue
      const out = await redisCliOver(tls, s.port, 'SENTINEL', 'get-master-addr-by-name', name)
      return Number(out.split('\n')[1])
    }
    throw new Error('no sentinel is running')
  }
  return {
    name,
    servers,
    sentinels,
    sentinelAddresses: sentinels.map((s) => `127.0.0.1:${s.port}`),
    primaryPort,
    async stop() {
      await Promise.all([...sentinels, ...servers].map((p) => p.stop()))
      for (const p of [...sentinels, ...servers]) rmSync(p.dir, { recursive: true, force: true })
    },
  }
}

/** Stops a server and removes its folder. */
export async function stopRedis(server: RedisProcess): Promise<void> {
  await server.stop()
  rmSync(server.dir, { recursive: true, force: true })
}
