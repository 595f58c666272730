import type net from 'node:net'
import type { ListenerConfig } from '../config/schema.js'
import type { ConnectionInfo } from '../connection-info.js'
import { listenerName, type ListenerContext } from './common.js'
import { readPreamble } from './proxy-protocol.js'

/*
 * The first step of every listener type: a raw TCP connection arrives, its PROXY preamble is read
 * according to the listener's `proxyProtocol` mode, and the connection goes on (to aedes, the TLS
 * or the HTTP server) with the real client address, or is closed with a log line that says why.
 */

/** The real client address of a connection, as the listener recorded it. */
export type PeerInfo = Pick<ConnectionInfo, 'listener' | 'remoteAddress' | 'remotePort' | 'proxied'>

export interface Acceptor {
  /** Closes the connections still sending their preamble. */
  close(): void
}

export function acceptConnections(
  server: net.Server,
  config: ListenerConfig,
  ctx: ListenerContext,
  onAccepted: (socket: net.Socket, peer: PeerInfo) => void,
): Acceptor {
  const listener = listenerName(config)
  const timeoutMs = ctx.limits.connectTimeout * 1000
  const pending = new Set<net.Socket>()
  server.on('connection', (socket) => {
    socket.setNoDelay(true)
    // The load balancer's (or the client's own) address, read now: it is gone once the socket closes.
    const peerAddress = socket.remoteAddress ?? 'unknown'
    const peerPort = socket.remotePort ?? 0
    pending.add(socket)
    readPreamble(socket, config.proxyProtocol, timeoutMs, (preamble) => {
      pending.delete(socket)
      const fields = { listener, peerAddress, peerPort }
      switch (preamble.outcome) {
        case 'refused':
          ctx.log.warn(fields, `${listener}: closed the connection from ${peerAddress}:${peerPort}: ${preamble.reason}`)
          socket.destroy()
          return
        case 'gone':
          ctx.log.debug(fields, `${listener}: connection from ${peerAddress}:${peerPort} ended before MQTT: ${preamble.reason}`)
          socket.destroy()
          return
        case 'plain': {
          const peer = { listener, remoteAddress: peerAddress, remotePort: peerPort, proxied: false }
          ctx.log.debug({ ...fields, ...peer }, `${listener}: accepted a connection from ${peerAddress}:${peerPort}`)
          onAccepted(socket, peer)
          return
        }
        case 'proxied': {
          const { header } = preamble
          if (!header.source) {
            // v2 LOCAL: a load balancer health check, which often closes right away. Debug only, or
            // every check of every target would log. [proxy-protocol 2.2]
            ctx.log.debug({ ...fields, proxyVersion: header.version }, `${listener}: PROXY v${header.version} LOCAL connection from ${peerAddress}:${peerPort} (load balancer health check)`)
            onAccepted(socket, { listener, remoteAddress: peerAddress, remotePort: peerPort, proxied: false })
            return
          }
          const peer = { listener, remoteAddress: header.source.address, remotePort: header.source.port, proxied: true }
          ctx.log.debug({ ...fields, ...peer, proxyVersion: header.version },
            `${listener}: accepted a connection from ${peer.remoteAddress}:${peer.remotePort} via PROXY v${header.version} from ${peerAddress}:${peerPort}`)
          onAccepted(socket, peer)
        }
      }
    })
  })
  return {
    close() {
      for (const socket of pending) socket.destroy()
      pending.clear()
    },
  }
}

/**
 * Carries a connection's peer from the raw socket to the socket a TLS or HTTP server builds on it.
 * Both share the TCP handle, hence the same remote address and port while the connection is open.
 */
export class PeerTable {
  private readonly peers = new Map<string, PeerInfo>()

  private static key(socket: net.Socket): string | undefined {
    return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}|${socket.remotePort}`
  }

  set(raw: net.Socket, peer: PeerInfo): void {
    const key = PeerTable.key(raw)
    if (key === undefined) return
    this.peers.set(key, peer)
    raw.once('close', () => {
      if (this.peers.get(key) === peer) this.peers.delete(key)
    })
  }

  get(socket: net.Socket): PeerInfo | undefined {
    const key = PeerTable.key(socket)
    return key === undefined ? undefined : this.peers.get(key)
  }
}
