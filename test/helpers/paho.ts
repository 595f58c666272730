import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'

/*
 * Eclipse Paho's Python client (Debian's python3-paho-mqtt, 1.6: MQTT 3.1.1 and 5.0) run as a
 * subprocess: a client we did not write and whose packet decoder is not mqtt-packet. It checks that
 * every property it receives is allowed on its packet type. The session plan is described in
 * paho-client.py; each line it prints is one event.
 */

/** Debian's interpreter, which the python3-paho-mqtt package installs into. */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const SCRIPT = resolve(import.meta.dirname, 'paho-client.py')

export interface PahoPlan {
  port: number
  version?: 3 | 4 | 5
  clientId?: string
  keepalive?: number
  cleanStart?: boolean
  /** CONNECT properties by Paho's names (`SessionExpiryInterval`, `ReceiveMaximum`, `TopicAliasMaximum`). */
  connectProperties?: Record<string, number>
  will?: { topic: string; payload?: string; qos?: 0 | 1 | 2; retain?: boolean; properties?: Record<string, unknown> }
  /** [filter, qos, subscription identifier?] */
  subscribe?: [string, 0 | 1 | 2, number?][]
  publish?: { topic: string; payload?: string; qos?: 0 | 1 | 2; retain?: boolean }[]
  /** Packets Paho keeps in flight (its default is 20). */
  maxInflight?: number
  /** Messages to wait for before disconnecting. */
  expect?: number
  /** Stay connected until the broker disconnects (or the timeout). */
  waitForDisconnect?: boolean
  /** Seconds to stay connected when nothing is expected. */
  hold?: number
  /** Close the socket without DISCONNECT. */
  drop?: boolean
  /** Seconds for the whole plan. */
  timeout?: number
}

export interface PahoEvent {
  event: 'connack' | 'suback' | 'subscribed' | 'published' | 'message' | 'disconnect' | 'error' | 'end' | 'dropped'
  reasonCode?: number
  sessionPresent?: boolean
  properties?: Record<string, unknown>
  topic?: string
  payload?: string
  qos?: number
  retain?: boolean
  dup?: boolean
  granted?: number[]
  message?: string
}

export interface PahoRun {
  readonly events: PahoEvent[]
  /** Resolves with the first event (already seen or later) that matches. */
  waitFor(match: (e: PahoEvent) => boolean, timeoutMs?: number): Promise<PahoEvent>
  /** Resolves with every event once Paho exited; rejects when it exited with an error. */
  readonly finished: Promise<PahoEvent[]>
}

export function runPaho(plan: PahoPlan): PahoRun {
  const child = spawn(PYTHON, [SCRIPT, JSON.stringify(plan)], { stdio: ['ignore', 'pipe', 'pipe'] })
  const events: PahoEvent[] = []
  const waiters: { match: (e: PahoEvent) => boolean; resolve: (e: PahoEvent) => void }[] = []
  let stderr = ''
  let partial = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d })
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    partial += chunk
    const lines = partial.split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) {
      if (line.trim() === '') continue
      const event = JSON.parse(line) as PahoEvent
      events.push(event)
      for (const waiter of [...waiters]) {
        if (waiter.match(event)) {
          waiters.splice(waiters.indexOf(waiter), 1)
          waiter.resolve(event)
        }
      }
    }
  })
  const killer = setTimeout(() => child.kill('SIGTERM'), ((plan.timeout ?? 10) + 10) * 1000)
  const finished = new Promise<PahoEvent[]>((resolvePromise, reject) => {
    child.on('close', (code) => {
      clearTimeout(killer)
      if (code === 0) resolvePromise(events)
      else reject(new Error(`Paho exited with ${code}: ${stderr}\nevents: ${JSON.stringify(events)}`))
    })
  })
  return {
    events,
    finished,
    waitFor(match, timeoutMs = 15_000) {
      const seen = events.find(match)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolvePromise, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching Paho event within ${timeoutMs} ms: ${JSON.stringify(events)}\n${stderr}`)), timeoutMs)
        waiters.push({ match, resolve: (e) => { clearTimeout(timer); resolvePromise(e) } })
      })
    },
  }
}
