import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Endpoint } from './wire.js'
import { ensureNodeCertificate } from '../broker/cluster/cluster-ca.js'

/*
 * Broker setups the bench compares. A setup starts fresh processes pinned to the broker's core
 * and says where publishers and subscribers connect: a clustered setup returns one node for
 * publishers and another for subscribers, and every process whose memory counts.
 */

export interface RunningBroker {
  /** Broker processes: CPU is summed over them. */
  readonly pids: readonly number[]
  /**
   * The processes that hold the connections made to `subscribe`, and their state: the idle-memory
   * scenario sums their growth. The cluster's node A holds none of them, and its RSS moves by
   * itself as V8 grows or shrinks its heap (-31 to +7 MB over one measurement, docs/bench.md).
   */
  readonly memoryPids: readonly number[]
  readonly publish: readonly Endpoint[]
  readonly subscribe: readonly Endpoint[]
  stop(): Promise<void>
}

export interface BrokerSetup {
  /** Key in --brokers and in the JSON output. */
  readonly id: string
  /** Column heading. */
  readonly label: string
  start(cpus: string): Promise<RunningBroker>
}

const REPO = resolve(import.meta.dirname, '..')
const FLEETMQ_BIN = join(REPO, 'bin/fleetmq.js')
const MOSQUITTO = '/usr/sbin/mosquitto'
const REDIS_SERVER = 'redis-server'
/** The hard open-files limit, which bounds the idle-connection scenario (raising it takes CAP_SYS_RESOURCE). */
export function openFilesLimit(): number {
  const out = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
  return out === 'unlimited' ? Infinity : Number(out)
}
const READY_TIMEOUT_MS = 20_000
const STOP_TIMEOUT_MS = 10_000

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise((r) => server.close(r))
  return port
}

/*
 * --realtime: the main thread of each broker process (once it listens) gets SCHED_FIFO priority 20
 * with `chrt`. Only the main thread: threads the process started before (V8's GC and compiler
 * workers) keep the normal policy, so they cannot hold the core against the event loop. The
 * generator is left alone: with SCHED_FIFO its main thread used 95 % of its core where it needs
 * 10 % without (measured on fan-in 8 → 1 against mosquitto), spinning while the threads it waits
 * for cannot run.
 */
// Not FLEETMQ_…: the broker reads those as configuration.
export const REALTIME_ENV = 'BENCH_REALTIME'
const REALTIME_PRIORITY = '20'

export function enableRealtime(): void {
  process.env[REALTIME_ENV] = '1'
}

/** Makes the main thread of `pid` SCHED_FIFO when --realtime is on; fails with the fix otherwise. */
export function makeRealtime(pid: number): void {
  if (process.env[REALTIME_ENV] !== '1') return
  try {
    execFileSync('chrt', ['-f', '-p', REALTIME_PRIORITY, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    throw new Error(`--realtime: chrt -f -p ${REALTIME_PRIORITY} ${pid} failed (${(err as Error).message.trim()}); it needs root or CAP_SYS_NICE: run without --realtime`)
  }
}

/** Spawns `command` with the open-files limit raised to the hard limit, pinned to `cpus` (taskset keeps the PID). */
export function spawnPinned(cpus: string, command: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  return spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec taskset -c "$0" "$@"', cpus, command, ...args], {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
}

/** Resolves once `port` accepts TCP connections; rejects, with the process's stderr, if it exits first. */
async function waitForPort(child: ChildProcess, name: string, port: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it listened on ${port}:\n${stderr()}`)
    }
    const open = await new Promise<boolean>((resolveOpen) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => {
        socket.destroy()
        resolveOpen(true)
      })
      socket.on('error', () => resolveOpen(false))
    })
    if (open) return
    await sleep(50)
  }
  throw new Error(`${name} did not listen on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms:\n${stderr()}`)
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
  await exited
  clearTimeout(timer)
}

async function startProcess(name: string, cpus: string, command: string, args: readonly string[], port: number, env?: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawnPinned(cpus, command, args, { env })
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    // Keep the tail only: a broker that logs per connection must not grow the driver.
    stderr = (stderr + d).slice(-8_192)
  })
  child.stdout?.resume()
  child.stdin?.end()
  try {
    await waitForPort(child, name, port, () => stderr)
    makeRealtime(child.pid as number)
  } catch (err) {
    await stopProcess(child)
    throw err
  }
  return child
}

/** Starts the processes `launch` starts, in order, in a temp folder; on a failure stops those already up. */
type Launch = (dir: string, started: ChildProcess[]) => Promise<Pick<RunningBroker, 'publish' | 'subscribe'> & { readonly memory?: readonly ChildProcess[] }>

async function startAll(prefix: string, launch: Launch): Promise<RunningBroker> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const started: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    // Nodes before the Redis they use: a node whose Redis vanished first logs an outage on its way out.
    for (const child of [...started].reverse()) await stopProcess(child)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const { publish, subscribe, memory = started } = await launch(dir, started)
    return { pids: started.map((c) => c.pid as number), memoryPids: memory.map((c) => c.pid as number), publish, subscribe, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Debian's mosquitto 2, tuned only so that it neither drops nor throttles what the bench sends. */
export const mosquittoSetup: BrokerSetup = {
  id: 'mosquitto',
  label: 'mosquitto',
  start: (cpus) => startAll('fleetmq-bench-mosquitto-', async (dir, started) => {
    const port = await freePort()
    const config = join(dir, 'mosquitto.conf')
    writeFileSync(config, [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      // 0 = no limit: a queue bound would drop QoS 1 messages in fan-in rather than slow them.
      'max_queued_messages 0',
      // Same window as FleetMQ's limits.maxInflight default.
      'max_inflight_messages 100',
      // FleetMQ's listener sets TCP_NODELAY too; without it mosquitto's latency pays for Nagle.
      'set_tcp_nodelay true',
      'max_connections -1',
      'log_dest none',
      '',
    ].join('\n'))
    started.push(await startProcess('mosquitto', cpus, MOSQUITTO, ['-c', config], port))
    const endpoint = { host: '127.0.0.1', port }
    return { publish: [endpoint], subscribe: [endpoint] }
  }),
}

interface Launched {
  readonly child: ChildProcess
  readonly endpoint: Endpoint
}

/**
 * One FleetMQ node, started as a user starts it, with the limits that would refuse the bench
 * lifted; `clusterArgs` joins it to a cluster. The node's data folder is `dir`, which the caller
 * removes.
 */
async function launchFleetmqNode(name: string, cpus: string, dir: string, clusterArgs: readonly string[] = [], clusterEnv: NodeJS.ProcessEnv = {}): Promise<Launched> {
  const port = await freePort()
  const env = {
    ...clusterEnv,
    // The listener is given here rather than with --mqtt so that its connectRate can be lifted:
    // 10,000 connections in a few seconds is the point of the memory scenario.
    FLEETMQ_LISTENERS: JSON.stringify([{ type: 'mqtt', host: '127.0.0.1', port, connectRate: 0, maxConnections: 0 }]),
    FLEETMQ_LIMITS__MAX_CONNECTIONS: '0',
    // The fan-in QoS 1 generator keeps up to 2,000 messages ahead of its subscriber, as mosquitto
    // runs with max_queued_messages 0: no per-session queue bound for either broker.
    FLEETMQ_LIMITS__MAX_QUEUED: '0',
  }
  mkdirSync(dir, { recursive: true })
  const args = [FLEETMQ_BIN, 'start', '--allow-anonymous', '--mgmt', '127.0.0.1:0', '--log-level', 'warn', '--log-format', 'json', '--data-dir', dir, ...clusterArgs]
  // BENCH_FLEETMQ_NODE_ARGS: extra node flags for profiling (`--cpu-prof`, `--heapsnapshot-signal=SIGUSR2`).
  const nodeArgs = process.env.BENCH_FLEETMQ_NODE_ARGS?.split(' ').filter(Boolean) ?? []
  const child = await startProcess(name, cpus, process.execPath, [...nodeArgs, ...args], port, env)
  return { child, endpoint: { host: '127.0.0.1', port } }
}

/** One FleetMQ node, standalone (state in memory). */
export const fleetmqSetup: BrokerSetup = {
  id: 'fleetmq',
  label: 'FleetMQ',
  start: (cpus) => startAll('fleetmq-bench-node-', async (dir, started) => {
    const node = await launchFleetmqNode('fleetmq', cpus, dir)
    started.push(node.child)
    return { publish: [node.endpoint], subscribe: [node.endpoint] }
  }),
}

/**
 * Two FleetMQ nodes in a cluster on one `redis-server` (no disk persistence: PUBLISH is never
 * written to disk anyway, and clean sessions store nothing), all three pinned to the broker
 * cores: publishers connect to node A, subscribers to node B, so every message crosses nodes.
 */
function clusterSetup(tls: boolean): BrokerSetup {
  return {
    id: tls ? 'fleetmq-cluster-tls' : 'fleetmq-cluster',
    label: tls ? 'FleetMQ cluster, Redis over TLS' : 'FleetMQ cluster',
    start: (cpus) => startAll('fleetmq-bench-cluster-', async (dir, started) => {
      const redisPort = await freePort()
      const redisDir = join(dir, 'redis')
      mkdirSync(redisDir)
      const secret = join(dir, 'cluster.secret')
      writeFileSync(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 })
      // With TLS: Redis as provisioning runs it (TLS only, the cluster CA), the nodes verifying it.
      const certs = tls ? ensureNodeCertificate({ secret: readFileSync(secret, 'utf8').trim(), dir: join(dir, 'tls'), name: 'bench', names: ['127.0.0.1'] }) : undefined
      const listen = certs
        ? ['--port', '0', '--tls-port', String(redisPort), '--tls-cert-file', certs.cert, '--tls-key-file', certs.key, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'optional']
        : ['--port', String(redisPort)]
      const redis = await startProcess('redis-server', cpus, REDIS_SERVER, [
        ...listen, '--bind', '127.0.0.1', '--daemonize', 'no', '--dir', redisDir,
        '--save', '', '--appendonly', 'no', '--logfile', join(redisDir, 'redis.log'),
      ], redisPort)
      started.push(redis)
      const clusterArgs = ['--redis', `${certs ? 'rediss' : 'redis'}://127.0.0.1:${redisPort}`, '--cluster-secret-file', secret]
      const clusterEnv = certs ? { FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE: certs.ca } : {}
      const a = await launchFleetmqNode('fleetmq node A', cpus, join(dir, 'node-a'), clusterArgs, clusterEnv)
      started.push(a.child)
      const b = await launchFleetmqNode('fleetmq node B', cpus, join(dir, 'node-b'), clusterArgs, clusterEnv)
      started.push(b.child)
      return { publish: [a.endpoint], subscribe: [b.endpoint], memory: [redis, b.child] }
    }),
  }
}

export const fleetmqClusterSetup: BrokerSetup = clusterSetup(false)
/** The same cluster with Redis over TLS, to measure what TLS costs the cross-node path. */
export const fleetmqClusterTlsSetup: BrokerSetup = clusterSetup(true)

export const BROKER_SETUPS: readonly BrokerSetup[] = [mosquittoSetup, fleetmqSetup, fleetmqClusterSetup, fleetmqClusterTlsSetup]

/** Resident memory of `pid`, bytes (VmRSS in /proc/PID/status). */
export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!match) throw new Error(`/proc/${pid}/status has no VmRSS line`)
  return Number(match[1]) * 1024
}

/** CPU time `pid` has used, seconds (utime + stime in /proc/PID/stat, at 100 ticks per second). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}
