import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { IncomingMessage } from 'node:http'
import { FleetmqError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Config, ListenerConfig } from '../config/schema.js'
import { DEFAULT_PORTS } from '../config/defaults.js'

/** Hands an accepted MQTT byte stream to the broker. */
export type ConnectionHandler = (stream: Duplex, req?: IncomingMessage) => void

export interface BoundListener {
  readonly name: string
  readonly type: ListenerConfig['type']
  readonly host: string
  /** The bound port (the real one when the config asked for 0). */
  readonly port: number
  /** True for mqtts and wss: `reload()` swaps their certificate. */
  readonly secure: boolean
  /**
   * Re-reads what the listener keeps on disk (TLS cert, key and CA) for new connections; open
   * connections keep theirs. Throws (and keeps the old material) when the new files are unusable.
   */
  reload(): Promise<void>
  /** Stops accepting connections. Open MQTT connections belong to the broker, which closes them. */
  close(): Promise<void>
}

export interface ListenerContext {
  readonly log: Logger
  readonly handle: ConnectionHandler
  /** `connectTimeout` bounds the PROXY header and the TLS/HTTP handshake; `maxPacketSize` a WebSocket frame. */
  readonly limits: Pick<Config['limits'], 'connectTimeout' | 'maxPacketSize'>
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

/**
 * Closes the listening socket. Does not wait for open connections (`server.close`'s callback
 * would): the broker disconnects its clients after the listeners stopped accepting.
 */
export function stopListening(server: net.Server): Promise<void> {
  if (server.listening) server.close()
  return Promise.resolve()
}
