import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'

/*
 * The stack's own processes: started as children (never daemonized, so their PIDs are ours),
 * logs to files in the state folder, stopped by PID in reverse order.
 */

export interface Managed {
  readonly name: string
  readonly child: ChildProcess
  readonly logFile: string
}

export class ProcessGroup {
  private readonly processes: Managed[] = []
  private readonly logDir: string

  constructor(stateDir: string) {
    this.logDir = join(stateDir, 'logs')
    mkdirSync(this.logDir, { recursive: true })
  }

  start(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Managed {
    const logFile = join(this.logDir, `${name}.log`)
    const log = createWriteStream(logFile, { flags: 'a' })
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout?.pipe(log, { end: false })
    child.stderr?.pipe(log, { end: false })
    child.on('error', (err) => log.write(`failed to start ${command}: ${err.message}\n`))
    const managed = { name, child, logFile }
    this.processes.push(managed)
    return managed
  }

  /** Processes that have exited already, with the end of their logs: what to show when a start fails. */
  exited(): string[] {
    return this.processes
      .filter((p) => p.child.exitCode !== null || p.child.signalCode !== null)
      .map((p) => {
        const tail = readFileSync(p.logFile, 'utf8').trim().split('\n').slice(-3).join('\n    ')
        return `${p.name} exited (${p.child.exitCode ?? p.child.signalCode}); the end of ${p.logFile}:\n    ${tail}`
      })
  }

  /** Stops one process by PID: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(managed: Managed, graceMs = 8_000): Promise<void> {
    const { child } = managed
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    }
    this.processes.splice(this.processes.indexOf(managed), 1)
  }

  /** Everything, newest first. */
  async stopAll(): Promise<void> {
    for (const managed of [...this.processes].reverse()) await this.stop(managed)
  }
}

/** Resolves when something accepts TCP connections on the port; rejects with the cause at the deadline. */
export async function waitForPort(port: number, timeoutMs: number, exited?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (exited && (exited.exitCode !== null || exited.signalCode !== null)) {
      throw new Error(`exited with ${exited.exitCode ?? exited.signalCode} before listening on ${port}`)
    }
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port })
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (open) return
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** The ports of `ports` that something already listens on (or that cannot be bound). */
export async function portsInUse(ports: readonly number[]): Promise<number[]> {
  const busy: number[] = []
  for (const port of ports) {
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer()
      server.once('error', () => resolve(false))
      server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)))
    })
    if (!free) busy.push(port)
  }
  return busy
}
