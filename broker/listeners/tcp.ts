import net from 'node:net'
import type { ListenerConfig } from '../config/schema.js'
import { recordConnectionInfo } from '../connection-info.js'
import { acceptConnections } from './accept.js'
import { bind, listenerName, stopListening, type BoundListener, type ListenerContext } from './common.js'

/** `mqtt`: MQTT over plain TCP, the socket itself handed to aedes. */
export async function startTcpListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  const name = listenerName(config)
  const server = net.createServer()
  const acceptor = acceptConnections(server, config, ctx, (socket, peer) => {
    recordConnectionInfo(socket, peer)
    ctx.handle(socket)
  })
  const port = await bind(server, config)
  return {
    name,
    type: config.type,
    host: config.host,
    port,
    secure: false,
    reload: () => Promise.resolve(),
    close() {
      acceptor.close()
      return stopListening(server)
    },
  }
}
