import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { IncomingMessage } from 'node:http'
import { FleetmqError } from '../errors.js'
import type { Logger } from '../log.js'
import type { ListenerConfig } from '../config/schema.js'
import { DEFAULT_PORTS } from '../config/defaults.js'

/** Hands an accepted MQTT byte stream to the broker. */
export type ConnectionHandler = (stream: Duplex, req?: IncomingMessage) => void

export interface BoundListener {
  readonly name: string
  readonly type: ListenerConfig['type']
  readonly host: string
  /** The bound port (the real one when the config asked for 0). */
  readonly port: number
  close(): Promise<void>
}

export interface ListenerContext {
  readonly log: Logger
  readonly handle: ConnectionHandler
}

export function listenerName(config: ListenerConfig): string {
  return config.name ?? `${config.type}:${config.port ?? DEFAULT_PORTS[config.type]}`
}

/** Binds `server` and resolves once it listens, or fails with an error that names the address. */
export function bind(server: net.Server, config: ListenerConfig): Promise<number> {
  const port = config.port ?? DEFAULT_PORTS[config.type]
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const hint = err.code === 'EADDRINUSE'
        ? 'another process uses it; stop it or choose another port'
        : err.code === 'EACCES' ? 'ports below 1024 need privileges; choose a port above 1023' : 'check the host and port'
      reject(new FleetmqError('LISTEN_FAILED', `${listenerName(config)} cannot listen on ${config.host}:${port} (${err.code ?? err.message}): ${hint}`))
    }
    server.once('error', onError)
    server.listen({ host: config.host, port }, () => {
      server.off('error', onError)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
}

export function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** A plain TCP MQTT listener. */
export async function startTcpListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true)
    ctx.handle(socket)
  })
  const port = await bind(server, config)
  return { name: listenerName(config), type: config.type, host: config.host, port, close: () => closeServer(server) }
}

export async function startListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  switch (config.type) {
    case 'mqtt':
      return startTcpListener(config, ctx)
    default:
      throw new FleetmqError('LISTEN_FAILED', `${config.type} listeners are not available in this build`)
  }
}
