import net from 'node:net'
import tls from 'node:tls'
import type { ListenerConfig, TlsConfig } from '../config/schema.js'
import { recordConnectionInfo } from '../connection-info.js'
import { acceptConnections, PeerTable } from './accept.js'
import { bind, listenerName, stopListening, type BoundListener, type ListenerContext } from './common.js'
import { loadTlsMaterial, tlsServerOptions, verifiedCommonName } from './tls-material.js'

/*
 * `mqtts`: MQTT over TLS. A plain TCP server accepts the connection so that a PROXY header, which
 * precedes the TLS handshake, is read first; the socket is then injected into a TLS server that
 * never listens itself (`tls.Server` documents the 'connection' event for this).
 */
export async function startTlsListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  const name = listenerName(config)
  const tlsConfig = config.tls as TlsConfig // the schema requires tls on mqtts
  const timeoutMs = ctx.limits.connectTimeout * 1000
  const tlsServer = tls.createServer(tlsServerOptions(name, tlsConfig, timeoutMs))
  const peers = new PeerTable()
  tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
    const peer = peers.get(socket)
    if (!peer) {
      socket.destroy()
      return
    }
    recordConnectionInfo(socket, { ...peer, tlsCommonName: verifiedCommonName(socket) })
    ctx.handle(socket)
  })
  tlsServer.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
    // Scanners and misconfigured clients fail handshakes all day: debug, with the reason.
    const peer = peers.get(socket)
    ctx.log.debug({ listener: name, remoteAddress: peer?.remoteAddress, remotePort: peer?.remotePort }, `${name}: TLS handshake failed: ${err.message}`)
  })
  const server = net.createServer()
  const acceptor = acceptConnections(server, config, ctx, (socket, peer) => {
    peers.set(socket, peer)
    tlsServer.emit('connection', socket)
  })
  const port = await bind(server, config)
  return {
    name,
    type: config.type,
    host: config.host,
    port,
    secure: true,
    async reload() {
      tlsServer.setSecureContext(loadTlsMaterial(name, tlsConfig))
    },
    close() {
      acceptor.close()
      return stopListening(server)
    },
  }
}
