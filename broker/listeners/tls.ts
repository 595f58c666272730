import tls from 'node:tls'
import type { ListenerConfig, TlsConfig } from '../config/schema.js'
import { recordConnectionInfo } from '../connection-info.js'
import { listenerName, type BoundListener, type ListenerContext } from './common.js'
import { listenThrough } from './inner-server.js'
import { loadTlsMaterial, tlsServerOptions, verifiedCommonName } from './tls-material.js'

/** `mqtts`: MQTT over TLS, through a TLS server that gets its sockets from `listenThrough`. */
export async function startTlsListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  const name = listenerName(config)
  const tlsConfig = config.tls as TlsConfig // the schema requires tls on mqtts
  const timeoutMs = ctx.limits.connectTimeout * 1000
  const tlsServer = tls.createServer(tlsServerOptions(name, tlsConfig, timeoutMs))
  tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
    const peer = outer.peerOf(socket)
    if (!peer) {
      socket.destroy()
      return
    }
    recordConnectionInfo(socket, { ...peer, tlsCommonName: verifiedCommonName(socket) })
    ctx.handle(socket)
  })
  const outer = await listenThrough(tlsServer, config, ctx, true)
  return {
    name,
    type: config.type,
    host: config.host,
    port: outer.port,
    secure: true,
    async reload() {
      tlsServer.setSecureContext(loadTlsMaterial(name, tlsConfig))
    },
    close: () => outer.close(),
  }
}
