import net from 'node:net'
import type tls from 'node:tls'
import type { ListenerConfig } from '../config/schema.js'
import { acceptConnections, PeerTable, type PeerInfo } from './accept.js'
import { bind, listenerName, stopListening, type ListenerContext } from './common.js'

/*
 * mqtts, ws and wss listeners accept on a plain TCP server, so that a PROXY header, which precedes
 * the TLS handshake or the HTTP request, is read first; each accepted socket is then handed to an
 * inner TLS or HTTP(S) server that never listens itself (`net.Server`'s 'connection' event is
 * documented for this). The peer read from the header is kept per socket for the inner server's
 * handlers.
 */

export interface InnerServerListener {
  readonly port: number
  /** The client address (from the PROXY header or the socket) of a socket the inner server got. */
  peerOf(socket: net.Socket): PeerInfo | undefined
  close(): Promise<void>
}

export async function listenThrough(inner: net.Server, config: ListenerConfig, ctx: ListenerContext, secure: boolean): Promise<InnerServerListener> {
  const name = listenerName(config)
  const peers = new PeerTable()
  if (secure) {
    inner.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      // Scanners and misconfigured clients fail handshakes all day: debug, with the reason.
      const peer = peers.get(socket)
      ctx.log.debug({ listener: name, remoteAddress: peer?.remoteAddress, remotePort: peer?.remotePort }, `${name}: TLS handshake failed: ${err.message}`)
    })
  }
  const server = net.createServer()
  const acceptor = acceptConnections(server, config, ctx, (socket, peer) => {
    peers.set(socket, peer)
    inner.emit('connection', socket)
  })
  const port = await bind(server, config)
  return {
    port,
    peerOf: (socket) => peers.get(socket),
    close() {
      acceptor.close()
      return stopListening(server)
    },
  }
}
