import type { ListenerConfig } from '../config/schema.js'
import type { BoundListener, ListenerContext } from './common.js'
import { startTcpListener } from './tcp.js'
import { startTlsListener } from './tls.js'
import { startWebSocketListener } from './ws.js'

export type { BoundListener, ConnectionHandler, ListenerContext } from './common.js'
export { listenerName } from './common.js'

/** Binds one listener of any type; each type lives in its own module. */
export function startListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  switch (config.type) {
    case 'mqtt':
      return startTcpListener(config, ctx)
    case 'mqtts':
      return startTlsListener(config, ctx)
    case 'ws':
    case 'wss':
      return startWebSocketListener(config, ctx)
  }
}
