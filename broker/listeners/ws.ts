import http from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import type tls from 'node:tls'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { ListenerConfig, TlsConfig } from '../config/schema.js'
import { recordConnectionInfo } from '../connection-info.js'
import { listenerName, type BoundListener, type ListenerContext } from './common.js'
import { listenThrough } from './inner-server.js'
import { requestPath } from '../mgmt/request-guard.js'
import { loadTlsMaterial, tlsServerOptions, verifiedCommonName } from './tls-material.js'

/*
 * `ws` and `wss`: MQTT over WebSocket at one path (`/mqtt` by default), through an HTTP(S) server
 * that gets its sockets from `listenThrough` (which reads the PROXY header first).
 */

/** MQTT over WebSocket subprotocol names, newest first (3.1 clients offer `mqttv3.1`). */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const

function refuseUpgrade(socket: Duplex, status: number, reason: string, body: string): void {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

export async function startWebSocketListener(config: ListenerConfig, ctx: ListenerContext): Promise<BoundListener> {
  const name = listenerName(config)
  const timeoutMs = ctx.limits.connectTimeout * 1000
  const tlsConfig = config.type === 'wss' ? (config.tls as TlsConfig) : undefined // the schema requires tls on wss
  const httpServer = tlsConfig ? https.createServer(tlsServerOptions(name, tlsConfig, timeoutMs)) : http.createServer()
  httpServer.headersTimeout = timeoutMs
  httpServer.requestTimeout = timeoutMs
  const notHere = `MQTT over WebSocket is served at ${config.path}\n`

  httpServer.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    // A target that does not parse (`//[`) is simply not the path: never an exception here.
    const onPath = requestPath(req.url) === config.path
    res.writeHead(onPath ? 426 : 404, { 'content-type': 'text/plain', connection: 'close', ...(onPath ? { upgrade: 'websocket' } : {}) })
    res.end(onPath ? 'this endpoint speaks MQTT over WebSocket: send an Upgrade: websocket request with subprotocol mqtt\n' : notHere)
  })

  const wss = new WebSocketServer({
    noServer: true,
    // A frame may carry several packets [MQTT-6.0.0-2], but clients send one per frame in practice;
    // bounding a frame by the packet limit keeps an unauthenticated peer from buffering 100 MiB.
    maxPayload: ctx.limits.maxPacketSize,
    // [MQTT-6.0.0-4] the server selects "mqtt" when the client offers it; a client offering no
    // subprotocol is still served (some embedded clients omit the header).
    handleProtocols: (offered) => SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  })

  httpServer.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const peer = outer.peerOf(req.socket)
    if (!peer) {
      socket.destroy()
      return
    }
    if (requestPath(req.url) !== config.path) {
      ctx.log.debug({ ...peer, path: req.url }, `${name}: WebSocket upgrade for ${req.url} refused with 404`)
      refuseUpgrade(socket, 404, 'Not Found', notHere)
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      // [MQTT-6.0.0-1] "If any other type of data frame is received the recipient MUST close the
      // Network Connection." Registered before the stream's own listener so it runs first.
      ws.on('message', (_data, isBinary) => {
        if (!isBinary) ws.close(1003, 'MQTT over WebSocket needs binary frames')
      })
      const stream = createWebSocketStream(ws)
      const tlsCommonName = tlsConfig ? verifiedCommonName(req.socket as tls.TLSSocket) : undefined
      recordConnectionInfo(stream, { ...peer, tlsCommonName })
      ctx.handle(stream, req)
    })
  })

  const outer = await listenThrough(httpServer, config, ctx, tlsConfig !== undefined)
  return {
    name,
    type: config.type,
    host: config.host,
    port: outer.port,
    secure: tlsConfig !== undefined,
    async reload() {
      if (tlsConfig) (httpServer as https.Server).setSecureContext(loadTlsMaterial(name, tlsConfig))
    },
    close() {
      wss.close()
      return outer.close()
    },
  }
}
