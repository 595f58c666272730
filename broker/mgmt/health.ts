import type { Route } from './http.js'
import type { FleetmqNode } from '../server.js'

/** `/healthz`: the process answers. `/readyz`: listeners are bound and the broker accepts work. */
export function healthRoutes(node: () => FleetmqNode | undefined): Route[] {
  return [
    { method: 'GET', path: '/healthz', public: true, handle: () => ({ status: 200, body: { status: 'ok' } }) },
    {
      method: 'GET',
      path: '/readyz',
      public: true,
      handle: () => {
        const current = node()
        const ready = current !== undefined && current.listeners.length > 0 && !current.aedes.closed
        return { status: ready ? 200 : 503, body: { ready } }
      },
    },
  ]
}
