import type { Aedes } from 'aedes'
import type { Duplex } from 'node:stream'
import type { Logger } from '../log.js'
import type { BoundListener } from '../listeners/common.js'
import type { MgmtServer } from '../mgmt/http.js'
import type { Feature } from '../hooks.js'
import { clientsOf } from '../core/aedes-adapter.js'

/*
 * Graceful shutdown (SIGTERM), in the order that loses nothing and keeps the bound:
 * 1. the node reports not ready (`/readyz` 503) and its listeners stop accepting;
 * 2. aedes closes every client: 5.0 clients first get DISCONNECT 0x8B Server shutting down
 *    [MQTT-3.14.2.1], 3.1.1 clients (which have no server DISCONNECT) a closed connection;
 * 3. whatever is still open after the grace period (a client that does not read its DISCONNECT,
 *    a connection that never sent CONNECT) is destroyed;
 * 4. the features close in reverse order: the backend flushes and closes its store;
 * 5. the management API closes last, so probes see the node draining until the end.
 */

const draining = new WeakSet<Aedes>()

/** True once a shutdown of this broker has started. */
export function isDraining(aedes: Aedes): boolean {
  return draining.has(aedes)
}

/** Every stream handed to aedes, so a shutdown can end the ones that never became clients. */
export interface ConnectionTracker {
  track(stream: Duplex): void
  destroyAll(): number
}

export function trackConnections(): ConnectionTracker {
  const open = new Set<Duplex>()
  // One function for every connection (no closure each): 'close' comes once.
  function untrack(this: Duplex): void {
    open.delete(this)
  }
  return {
    track(stream) {
      open.add(stream)
      stream.on('close', untrack)
    },
    destroyAll() {
      const count = open.size
      for (const stream of open) stream.destroy()
      open.clear()
      return count
    },
  }
}

export interface ShutdownParts {
  readonly aedes: Aedes
  readonly listeners: readonly BoundListener[]
  readonly mgmt: MgmtServer | undefined
  readonly features: readonly Feature[]
  readonly connections: ConnectionTracker
  readonly log: Logger
  /** How long clients get to receive their DISCONNECT before their sockets are destroyed, ms. */
  readonly graceMs: number
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms) }),
  ]).finally(() => clearTimeout(timer))
}

export async function shutdownNode(parts: ShutdownParts): Promise<void> {
  const { aedes, log } = parts
  draining.add(aedes)
  await within(Promise.all(parts.listeners.map((l) => l.close())), parts.graceMs)

  const clients = Object.values(clientsOf(aedes))
  const v5 = clients.filter((c) => c.version === 5).length
  if (clients.length > 0) {
    log.info({ clients: clients.length, v5 }, `draining ${clients.length} clients: ${v5} MQTT 5.0 clients get DISCONNECT 0x8B Server shutting down, ${clients.length - v5} older clients a closed connection`)
  }
  const closed = await within(new Promise<void>((resolve) => aedes.close(() => resolve())), parts.graceMs)
  const destroyed = parts.connections.destroyAll()
  if (closed === 'timeout') log.warn({ destroyed }, `clients did not take their DISCONNECT within ${parts.graceMs} ms; closed ${destroyed} connections`)

  for (const feature of [...parts.features].reverse()) {
    try {
      await feature.close?.()
    } catch (err) {
      log.error({ err, feature: feature.name }, `${feature.name}: error while closing: ${(err as Error).message}`)
    }
  }
  await parts.mgmt?.close()
}
