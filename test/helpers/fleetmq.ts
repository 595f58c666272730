import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { after, before } from 'node:test'
import { stringify as toYaml } from 'yaml'

/** The installed entry point, run as a user runs it. */
export const FLEETMQ_BIN = resolve(import.meta.dirname, '../../bin/fleetmq.js')

export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export interface RunningFleetmq {
  readonly process: ChildProcess
  /** Bound ports by listener name (`mqtt:0` …) and by type (first of each). */
  readonly ports: Record<string, number>
  readonly mgmtPort: number | undefined
  readonly logs: LogLine[]
  readonly dir: string
  /** Resolves with the first log line that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  /** SIGTERM, then waits for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export interface StartOptions {
  /** Config written to a temp YAML file and passed with --config. */
  config?: Record<string, unknown>
  args?: string[]
  env?: NodeJS.ProcessEnv
  /** Defaults to a fresh temp folder. */
  dataDir?: string
  /** Users added with `fleetmq user add` to the data dir's store before the start. */
  users?: readonly { username: string; password: string; admin?: boolean }[]
  /** Called with every log line as it arrives, also before the broker is ready. */
  onLog?: (line: LogLine, child: ChildProcess) => void
}

/** Runs `fleetmq` with the args given (and `input` on its stdin); resolves with its exit code, stdout and stderr. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [FLEETMQ_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  child.stdin.end(input)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d })
  child.stderr.on('data', (d: Buffer) => { stderr += d })
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, stdout, stderr }
}

/**
 * Starts `fleetmq start` on free ports (every listener and the management API on port 0 unless
 * given) and resolves once every listener logged its bound port.
 */
export async function startFleetmq(options: StartOptions = {}): Promise<RunningFleetmq> {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-test-'))
  const args = ['start', '--log-format', 'json', '--data-dir', options.dataDir ?? dir]
  for (const user of options.users ?? []) {
    const added = await runCli(['user', 'add', user.username, '--password-stdin', '--data-dir', options.dataDir ?? dir, ...(user.admin ? ['--admin'] : [])], options.env, `${user.password}\n`)
    if (added.code !== 0) throw new Error(`fleetmq user add ${user.username} failed: ${added.stderr}`)
  }
  let expectedListeners = 1
  if (options.config) {
    const file = join(dir, 'fleetmq.yaml')
    const config: Record<string, unknown> = { mgmt: { host: '127.0.0.1', port: 0 }, ...options.config }
    writeFileSync(file, toYaml(config))
    args.push('--config', file)
    expectedListeners = (config.listeners as unknown[] | undefined)?.length ?? 1
  } else {
    args.push('--mgmt', '127.0.0.1:0')
  }
  args.push(...(options.args ?? []))
  if (!options.config && !(options.args ?? []).includes('--mqtt')) args.push('--mqtt', '127.0.0.1:0')
  const child = spawn(process.execPath, [FLEETMQ_BIN, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: LogLine[] = []
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = []
  let stderr = ''
  child.stderr.setEncoding('utf8')
  let partial = ''
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk
    partial += chunk
    const lines = partial.split('\n')
    partial = lines.pop() ?? ''
    for (const text of lines) {
      let line: LogLine
      try {
        line = JSON.parse(text) as LogLine
      } catch {
        continue
      }
      logs.push(line)
      options.onLog?.(line, child)
      for (const waiter of [...waiters]) {
        if (waiter.match(line)) {
          waiters.splice(waiters.indexOf(waiter), 1)
          waiter.resolve(line)
        }
      }
    }
  })
  child.stdout.resume()

  const waitForLog = (match: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => {
    const seen = logs.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms; stderr:\n${stderr}`)), timeoutMs)
      waiters.push({ match, resolve: (l) => { clearTimeout(timer); resolvePromise(l) } })
    })
  }

  const exited = once(child, 'exit')
  const ready = (async () => {
    const ports: Record<string, number> = {}
    let mgmtPort: number | undefined
    const mgmtEnabled = (options.config?.mgmt as { enabled?: boolean } | undefined)?.enabled !== false
    await waitForLog((l) => {
      if (typeof l.listener === 'string' && typeof l.port === 'number') {
        ports[l.listener] = l.port
        const type = l.listener.split(':')[0]
        ports[type] ??= l.port
      }
      if (/^management API/.test(l.msg)) mgmtPort = l.port as number
      const listenerCount = logs.filter((x) => typeof x.listener === 'string' && /^listening/.test(x.msg)).length
      // 'started' is the node's last line of a start (after the cluster membership).
      return l.msg === 'started' && listenerCount >= expectedListeners && (!mgmtEnabled || mgmtPort !== undefined)
    })
    return { ports, mgmtPort }
  })()
  const result = await Promise.race([
    ready,
    exited.then(([code]) => { throw new Error(`fleetmq exited with ${code} before it was ready; stderr:\n${stderr}`) }),
  ])
  return {
    process: child,
    ports: result.ports,
    mgmtPort: result.mgmtPort,
    logs,
    dir,
    waitForLog,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill(signal)
      const [code] = (await exited) as [number | null]
      return code
    },
  }
}

/**
 * One broker for a whole test file: started before its first test, stopped (exit code 0 asserted)
 * after its last. Read `broker` and `port` inside tests.
 */
export function brokerForFile(options: StartOptions = {}): { readonly broker: RunningFleetmq; readonly port: number } {
  let running: RunningFleetmq | undefined
  before(async () => {
    running = await startFleetmq(options)
  })
  after(async () => {
    if (running === undefined) return
    const code = await running.stop()
    if (code !== 0) throw new Error(`the broker exited with ${code}`)
  })
  const started = (): RunningFleetmq => running ?? (() => { throw new Error('the file\'s broker is not started yet') })()
  return {
    get broker() { return started() },
    get port() { return started().ports.mqtt },
  }
}
