import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../log.js'
import { FleetmqError } from '../errors.js'
import { requestPath, requestProblem } from './request-guard.js'

export interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  readonly path: string
  /** Health endpoints are open; everything else requires credentials. */
  readonly public?: boolean
  handle(req: http.IncomingMessage, body: Buffer): Promise<RouteResult> | RouteResult
}

export interface RouteResult {
  readonly status: number
  readonly body: unknown
  /** Defaults to JSON; a string body with `text/plain` (Prometheus) is sent as is. */
  readonly contentType?: string
}

export interface MgmtServer {
  readonly host: string
  readonly port: number
  close(): Promise<void>
}

export interface MgmtOptions {
  readonly host: string
  readonly port: number
  readonly log: Logger
  readonly routes: readonly Route[]
  /** Host names besides IP addresses, `localhost` and the machine's name that requests may use. */
  readonly allowedHosts?: readonly string[]
  /** Decides whether a request to a non-public route carries valid credentials. */
  authorize(req: http.IncomingMessage): Promise<boolean> | boolean
}

const MAX_BODY_BYTES = 1_048_576

function send(res: http.ServerResponse, result: RouteResult): void {
  const contentType = result.contentType ?? 'application/json'
  const payload = contentType === 'application/json' ? `${JSON.stringify(result.body)}\n` : String(result.body)
  res.writeHead(result.status, { 'content-type': contentType, 'cache-control': 'no-store' })
  res.end(payload)
}

export async function startMgmtServer(options: MgmtOptions): Promise<MgmtServer> {
  const server = http.createServer((req, res) => {
    const problem = requestProblem(req, options.allowedHosts ?? [])
    if (problem) {
      options.log.debug({ remoteAddress: req.socket.remoteAddress, host: req.headers.host, origin: req.headers.origin }, `management request refused: ${problem.error}`)
      send(res, { status: problem.status, body: { error: problem.error } })
      req.resume()
      return
    }
    const pathname = requestPath(req.url) as string // requestProblem refused targets that do not parse
    const route = options.routes.find((r) => r.path === pathname && r.method === req.method)
    if (!route) {
      const known = options.routes.some((r) => r.path === pathname)
      send(res, known ? { status: 405, body: { error: `method ${req.method} not allowed` } } : { status: 404, body: { error: `no such endpoint ${pathname}` } })
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        send(res, { status: 413, body: { error: 'request body too large' } })
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      void (async () => {
        try {
          if (!route.public && !(await options.authorize(req))) {
            res.setHeader('www-authenticate', 'Basic realm="fleetmq"')
            send(res, { status: 401, body: { error: 'authentication required: an admin user (Basic), or the node\'s management token (Bearer, in <dataDir>/mgmt.token, which fleetmq commands on the node read)' } })
            return
          }
          send(res, await route.handle(req, Buffer.concat(chunks)))
        } catch (err) {
          // An error that says its own status (503: the node is busy hashing passwords) is the
          // node's state, not a bug: a warning and that status. Anything else is a 500.
          const status = (err as { statusCode?: unknown }).statusCode
          if (typeof status === 'number' && status >= 400 && status < 600) {
            options.log.warn({ path: pathname, status }, `management request answered ${status}: ${(err as Error).message}`)
            if (status === 503) res.setHeader('retry-after', '1')
            send(res, { status, body: { error: (err as Error).message } })
            return
          }
          options.log.error({ err, path: pathname }, 'management request failed')
          send(res, { status: 500, body: { error: (err as Error).message } })
        }
      })()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FleetmqError('LISTEN_FAILED', `management API cannot listen on ${options.host}:${options.port} (${err.code ?? err.message}); choose another --mgmt address`)))
    server.listen({ host: options.host, port: options.port }, resolve)
  })
  const { port } = server.address() as AddressInfo
  return {
    host: options.host,
    port,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}
