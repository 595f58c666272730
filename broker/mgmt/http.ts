import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../log.js'
import { FleetmqError } from '../errors.js'
import { loadTlsMaterial } from '../listeners/tls-material.js'
import { requestProblem } from './request-guard.js'

/** What a caller may do: viewer reads, operator also acts on clients and messages, admin everything. */
export type ApiRole = 'viewer' | 'operator' | 'admin'
export const API_ROLES: readonly ApiRole[] = ['viewer', 'operator', 'admin']

/** Who a request authenticated as. */
export interface Principal {
  /** An admin user (Basic), the node's management token, an API key, or a request signed with the cluster secret. */
  readonly kind: 'user' | 'token' | 'apikey' | 'cluster'
  readonly name: string
  readonly role: ApiRole
}

export interface RouteContext {
  /** Path parameters of a templated path (`/api/v1/clients/{clientid}`), percent-decoded. */
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  /** Undefined on public routes. */
  readonly principal?: Principal
}

export interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** A path, or a template whose `{name}` segments match one path segment each. */
  readonly path: string
  /** Health endpoints are open, and so are routes that check credentials themselves (the cluster's). */
  readonly public?: boolean
  /** The least role a caller needs; admin when not given. */
  readonly role?: ApiRole
  handle(req: http.IncomingMessage, body: Buffer, context: RouteContext): Promise<RouteResult> | RouteResult
}

export interface RouteResult {
  readonly status: number
  readonly body: unknown
  /** Defaults to JSON; a string body with `text/plain` (Prometheus) is sent as is. */
  readonly contentType?: string
  /** Extra response headers (the dashboard's Set-Cookie and Content-Security-Policy). */
  readonly headers?: Readonly<Record<string, string>>
}

export interface MgmtServer {
  readonly host: string
  readonly port: number
  /** `http(s)://host:port` */
  readonly url: string
  close(): Promise<void>
}

export interface MgmtOptions {
  readonly host: string
  readonly port: number
  readonly log: Logger
  readonly routes: readonly Route[]
  /** Host names besides IP addresses, `localhost` and the machine's name that requests may use. */
  readonly allowedHosts?: readonly string[]
  /** HTTPS with these PEM files (`mgmt.tls`). */
  readonly tls?: { readonly cert: string; readonly key: string }
  /** Who a request to a non-public route authenticated as, or undefined when its credentials are missing or wrong. */
  authorize(req: http.IncomingMessage): Promise<Principal | undefined> | Principal | undefined
}

const MAX_BODY_BYTES = 1_048_576

/**
 * The body of every error the management API answers: a stable code, a message that says what to
 * do, and the request field at fault for a 400. `error` repeats the message for the clients of the
 * routes that predate API v1 (`fleetmq cluster …` of an earlier release).
 */
export function errorBody(code: string, message: string, field?: string): { code: string; message: string; field?: string; error: string } {
  return { code, message, ...(field !== undefined ? { field } : {}), error: message }
}

export const errorResult = (status: number, code: string, message: string, field?: string): RouteResult => ({ status, body: errorBody(code, message, field) })

const rank = (role: ApiRole): number => API_ROLES.indexOf(role)
export const roleAllows = (held: ApiRole, needed: ApiRole): boolean => rank(held) >= rank(needed)

interface CompiledRoute {
  readonly route: Route
  readonly segments: readonly (string | { param: string })[]
}

function compile(route: Route): CompiledRoute {
  const segments = route.path.split('/').map((segment) => {
    const param = /^\{(\w+)\}$/.exec(segment)
    return param ? { param: param[1] } : segment
  })
  return { route, segments }
}

/** The parameters when `pathname` fits the template, undefined otherwise; null when a segment is not valid percent-encoding. */
function matchPath(compiled: CompiledRoute, parts: readonly string[]): Record<string, string> | undefined | null {
  if (parts.length !== compiled.segments.length) return undefined
  const params: Record<string, string> = {}
  for (let i = 0; i < parts.length; i++) {
    const segment = compiled.segments[i]
    if (typeof segment === 'string') {
      if (segment !== parts[i]) return undefined
      continue
    }
    if (parts[i] === '') return undefined
    try {
      params[segment.param] = decodeURIComponent(parts[i])
    } catch {
      return null
    }
  }
  return params
}

const CODE_BY_STATUS: Record<number, string> = {
  400: 'BAD_REQUEST', 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 404: 'NOT_FOUND', 405: 'METHOD_NOT_ALLOWED', 409: 'CONFLICT',
  413: 'PAYLOAD_TOO_LARGE', 415: 'UNSUPPORTED_MEDIA_TYPE', 421: 'MISDIRECTED_REQUEST', 429: 'TOO_MANY_REQUESTS', 500: 'INTERNAL', 503: 'UNAVAILABLE',
}
export const codeForStatus = (status: number): string => CODE_BY_STATUS[status] ?? `HTTP_${status}`

function send(res: http.ServerResponse, result: RouteResult): void {
  if (result.status === 204) {
    res.writeHead(204, { ...result.headers, 'cache-control': 'no-store' })
    res.end()
    return
  }
  const contentType = result.contentType ?? 'application/json'
  const payload = contentType === 'application/json' ? `${JSON.stringify(result.body)}\n` : String(result.body)
  res.writeHead(result.status, { ...result.headers, 'content-type': contentType, 'cache-control': 'no-store' })
  res.end(payload)
}

export async function startMgmtServer(options: MgmtOptions): Promise<MgmtServer> {
  const routes = options.routes.map(compile)
  const handler: http.RequestListener = (req, res) => {
    const problem = requestProblem(req, options.allowedHosts ?? [])
    if (problem) {
      options.log.debug({ remoteAddress: req.socket.remoteAddress, host: req.headers.host, origin: req.headers.origin }, `management request refused: ${problem.error}`)
      send(res, errorResult(problem.status, codeForStatus(problem.status), problem.error))
      req.resume()
      return
    }
    const url = new URL(req.url ?? '/', 'http://node') // requestProblem refused targets that do not parse
    const pathname = url.pathname
    const parts = pathname.split('/')
    let route: Route | undefined
    let params: Record<string, string> | undefined
    const allowed: string[] = []
    for (const candidate of routes) {
      const matched = matchPath(candidate, parts)
      if (matched === null) {
        send(res, errorResult(400, 'BAD_REQUEST', `the path ${pathname} is not valid percent-encoding`))
        req.resume()
        return
      }
      if (matched === undefined) continue
      allowed.push(candidate.route.method)
      if (candidate.route.method === req.method) {
        route = candidate.route
        params = matched
        break
      }
    }
    if (!route) {
      // [RFC 9110 §15.5.6] a 405 names the methods the resource has.
      if (allowed.length > 0) res.setHeader('allow', [...new Set(allowed)].join(', '))
      send(res, allowed.length > 0 ? errorResult(405, 'METHOD_NOT_ALLOWED', `method ${req.method} not allowed on ${pathname} (it takes ${[...new Set(allowed)].join(', ')})`) : errorResult(404, 'NOT_FOUND', `no such endpoint ${pathname}`))
      req.resume()
      return
    }
    const found = route
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        send(res, errorResult(413, 'PAYLOAD_TOO_LARGE', `the request body is larger than ${MAX_BODY_BYTES} bytes`))
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      void (async () => {
        try {
          let principal: Principal | undefined
          if (!found.public) {
            principal = await options.authorize(req)
            if (!principal) {
              res.setHeader('www-authenticate', 'Basic realm="fleetmq"')
              send(res, errorResult(401, 'UNAUTHORIZED', 'authentication required: an admin user (Basic), an API key (Bearer, fleetmq apikey add), or the node\'s management token (Bearer, in <dataDir>/mgmt.token, which fleetmq commands on the node read)'))
              return
            }
            const needed = found.role ?? 'admin'
            if (!roleAllows(principal.role, needed)) {
              send(res, errorResult(403, 'FORBIDDEN', `${req.method} ${pathname} needs the ${needed} role; ${principal.kind === 'apikey' ? `API key "${principal.name}"` : principal.name} has ${principal.role}`))
              return
            }
          }
          send(res, await found.handle(req, Buffer.concat(chunks), { params: params ?? {}, query: url.searchParams, principal }))
        } catch (err) {
          // An error that says its own status (503: the node is busy hashing passwords) is the
          // node's state, not a bug: a warning and that status. Anything else is a 500.
          const status = (err as { statusCode?: unknown }).statusCode
          if (typeof status === 'number' && status >= 400 && status < 600) {
            options.log.warn({ path: pathname, status }, `management request answered ${status}: ${(err as Error).message}`)
            if (status === 503) res.setHeader('retry-after', '1')
            send(res, errorResult(status, codeForStatus(status), (err as Error).message))
            return
          }
          options.log.error({ err, path: pathname }, 'management request failed')
          send(res, errorResult(500, 'INTERNAL', (err as Error).message))
        }
      })()
    })
  }
  // HTTPS when configured: the cluster secret's signatures and sealed answers already keep secrets
  // off the wire, TLS also keeps what nodes and operators read (status, users) to themselves.
  const server = options.tls ? https.createServer({ ...loadTlsMaterial('mgmt', { ...options.tls, requestClientCert: false, requireClientCert: false, useCnAsUsername: false, minVersion: 'TLSv1.2' }) }, handler) : http.createServer(handler)
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FleetmqError('LISTEN_FAILED', `management API cannot listen on ${options.host}:${options.port} (${err.code ?? err.message}); choose another --mgmt address`)))
    server.listen({ host: options.host, port: options.port }, resolve)
  })
  const { port } = server.address() as AddressInfo
  return {
    host: options.host,
    port,
    url: `${options.tls ? 'https' : 'http'}://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}
