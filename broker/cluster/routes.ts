import type { IncomingMessage } from 'node:http'
import type { Route, RouteResult } from '../mgmt/http.js'
import { isFleetmqError } from '../errors.js'
import { createRateLimiter } from './rate-limit.js'
import { NonceCache, seal, verifySignedRequest } from './signed-request.js'

/*
 * The cluster's management routes. The management server treats them as public and they check
 * credentials themselves, because the cluster secret is valid here and nowhere else:
 *
 *   GET  /api/v1/cluster/descriptor  a request signed with the cluster secret only: it hands out
 *                                    Redis credentials, so its answer is sealed for the signer
 *   GET  /api/v1/cluster/status      the cluster secret, an admin, or the node's management token
 *   POST /api/v1/cluster/join        the cluster secret, an admin, or the node's management token
 *   POST /api/v1/cluster/leave       the cluster secret, an admin, or the node's management token
 *
 * "The cluster secret" means a request signed with it (signed-request.ts): the secret itself never
 * crosses the network, and a captured request cannot be replayed.
 *
 * The management token (`<dataDir>/mgmt.token`, see mgmt/local-token.ts) is how `fleetmq cluster …`
 * works on the node itself, like `emqx_ctl`: whoever can read the node's files may manage it. A
 * request from loopback is trusted no more than any other: local users and web pages reach
 * loopback too. Every route is rate-limited per remote address (token bucket) and answers 429 beyond it.
 */

export const CLUSTER_API = '/api/v1/cluster'

export type Access = 'secret' | 'operator'

export interface ClusterHandlers {
  descriptor(): Promise<RouteResult> | RouteResult
  status(): Promise<RouteResult> | RouteResult
  join(body: unknown): Promise<RouteResult> | RouteResult
  leave(): Promise<RouteResult> | RouteResult
}

export interface ClusterRouteOptions {
  /** The cluster secret, or undefined when none is configured. */
  readonly secret: string | undefined
  /** An admin user or the node's management token (the management server's own check). */
  readonly authorizeOperator?: (req: IncomingMessage) => Promise<boolean> | boolean
  readonly rate: number
  readonly burst: number
}

const error = (status: number, message: string): RouteResult => ({ status, body: { error: message } })

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return {}
  try {
    return JSON.parse(body.toString('utf8'))
  } catch {
    return undefined
  }
}

export function clusterRoutes(handlers: ClusterHandlers, options: ClusterRouteOptions): Route[] {
  const limiter = createRateLimiter(options.rate, options.burst)

  const nonces = new NonceCache()
  const signedBy = (req: IncomingMessage, body: Buffer) =>
    (options.secret === undefined ? { ok: false as const, reason: 'no cluster secret here' } : verifySignedRequest(req, body, options.secret, nonces))

  const guard = (access: Access, handle: (req: IncomingMessage, body: Buffer) => Promise<RouteResult> | RouteResult) =>
    async (req: IncomingMessage, body: Buffer): Promise<RouteResult> => {
      if (!limiter.take(req.socket.remoteAddress ?? 'unknown')) {
        return error(429, 'too many cluster management requests from this address; retry in a few seconds')
      }
      const signed = signedBy(req, body)
      let allowed = signed.ok
      if (!allowed && access === 'operator') allowed = (await options.authorizeOperator?.(req)) === true
      if (!allowed) {
        if (access === 'secret' && options.secret === undefined) {
          return error(503, 'this node has no cluster secret (cluster.secretFile); it cannot admit other nodes')
        }
        return error(401, access === 'secret'
          ? `the request is not signed with this cluster's secret (${signed.ok ? '' : signed.reason}); use the secret file of the cluster (--cluster-secret-file)`
          : 'authentication required: a request signed with the cluster secret, an admin user (Basic), or the node\'s management token (Bearer, <dataDir>/mgmt.token: run fleetmq as the node\'s user, with its --data-dir)')
      }
      try {
        const result = await handle(req, body)
        // The descriptor holds Redis credentials: only the signer can read it on the wire.
        if (access === 'secret' && signed.ok && options.secret !== undefined && result.status === 200) {
          return { ...result, body: seal(options.secret, signed.nonce, result.body) }
        }
        return result
      } catch (err) {
        if (isFleetmqError(err)) return error(400, err.message)
        throw err
      }
    }

  return [
    { method: 'GET', path: `${CLUSTER_API}/descriptor`, public: true, handle: guard('secret', () => handlers.descriptor()) },
    { method: 'GET', path: `${CLUSTER_API}/status`, public: true, handle: guard('operator', () => handlers.status()) },
    {
      method: 'POST',
      path: `${CLUSTER_API}/join`,
      public: true,
      handle: guard('operator', (_req, body) => {
        const parsed = parseJson(body)
        if (parsed === undefined) return error(400, 'the request body is not JSON; send {"seed": "HOST:PORT", "secret": "…"}')
        return handlers.join(parsed)
      }),
    },
    { method: 'POST', path: `${CLUSTER_API}/leave`, public: true, handle: guard('operator', () => handlers.leave()) },
  ]
}
