import type { Route } from './http.js'
import type { FleetmqNode } from '../server.js'
import { isDraining } from '../features/shutdown.js'

/*
 * `/healthz`: the process answers (a liveness probe: restart the node when it fails).
 * `/readyz`: the node should get traffic (a readiness probe, the load balancer's health check):
 * its listeners are bound, it is not draining, and its backend answers a read within
 * `BACKEND_TIMEOUT_MS` (a Redis round trip when the state is in Redis).
 * Both are public: probes carry no credentials, so they reveal nothing but up or down and a
 * generic reason. The backend's detail (Redis address, last error, counters) is in the
 * authenticated `/api/v1/cluster/status`.
 */

const BACKEND_TIMEOUT_MS = 2_000

/** A feature's own view of readiness (the cluster's: Redis reachable, not leaving); not shown in the body. */
export type Readiness = () => { readonly ready: boolean }

interface PersistenceProbe {
  getWill(client: { id: string; brokerId?: string }): Promise<unknown>
}

/** Resolves with an error message when the backend does not answer, undefined when it does. */
async function backendProblem(node: FleetmqNode): Promise<string | undefined> {
  const persistence = (node.aedes as unknown as { persistence?: PersistenceProbe }).persistence
  if (!persistence) return 'the backend is not set up'
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<string>((resolve) => { timer = setTimeout(() => resolve(`the backend did not answer within ${BACKEND_TIMEOUT_MS} ms`), BACKEND_TIMEOUT_MS) })
  try {
    // A read of a key no client has: a round trip to the store, whatever it holds.
    const probe = persistence.getWill({ id: '$fleetmq-readyz', brokerId: node.aedes.id }).then(() => undefined, (err: Error) => `the backend failed: ${err.message}`)
    return await Promise.race([probe, timeout])
  } finally {
    clearTimeout(timer)
  }
}

export function healthRoutes(node: () => FleetmqNode | undefined, readiness?: Readiness): Route[] {
  return [
    { method: 'GET', path: '/healthz', public: true, handle: () => ({ status: 200, body: { status: 'ok' } }) },
    {
      method: 'GET',
      path: '/readyz',
      public: true,
      handle: async () => {
        const current = node()
        const extra = readiness?.()
        let problem: string | undefined
        if (current === undefined || current.listeners.length === 0) problem = 'the listeners are not bound yet'
        else if (isDraining(current.aedes) || current.aedes.closed) problem = 'the node is shutting down'
        else if (extra && !extra.ready) problem = 'the cluster is not ready (see /api/v1/cluster/status)'
        else problem = await backendProblem(current)
        const body = { ready: problem === undefined, ...(problem ? { reason: problem } : {}) }
        return { status: problem ? 503 : 200, body }
      },
    },
  ]
}
