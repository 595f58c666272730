import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/*
 * A real HAProxy, the load balancer stand-in (TLS termination, PROXY v1/v2 to the brokers), run in
 * the foreground (`-db`) from a config string and stopped by PID.
 */

export interface RunningHaproxy {
  readonly process: ChildProcess
  readonly configFile: string
  /** What HAProxy printed (warnings, alerts, and logs when the config sends them to stderr). */
  output(): string
  stop(): Promise<void>
}

/** A free loopback port for a `bind` line (HAProxy cannot report a port it picked itself). */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Starts HAProxy and resolves once every `bind 127.0.0.1:PORT`
 * of the config accepts connections.
 */
export async function startHaproxy(config: string, timeoutMs = 10_000): Promise<RunningHaproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-haproxy-'))
  const configFile = join(dir, 'haproxy.cfg')
  writeFileSync(configFile, config.endsWith('\n') ? config : `${config}\n`)
  const child = spawn('haproxy', ['-f', configFile, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d })
  child.stderr.on('data', (d: Buffer) => { output += d })
  const exited = once(child, 'exit')
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    await exited
  }
  const ports = [...config.matchAll(/^\s*bind\s+127\.0\.0\.1:(\d+)/gm)].map((m) => Number(m[1]))
  const deadline = Date.now() + timeoutMs
  for (const port of ports) {
    while (!(await canConnect(port))) {
      if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}:\n${output}`)
      if (Date.now() > deadline) {
        await stop()
        throw new Error(`haproxy did not listen on 127.0.0.1:${port} within ${timeoutMs} ms:\n${output}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  return { process: child, configFile, output: () => output, stop }
}
