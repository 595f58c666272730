import type { Aedes, Client } from 'aedes'
import { clientsOf } from '../core/aedes-adapter.js'

/*
 * Draining a node that leaves the cluster. Every client is sent elsewhere; persistent sessions stay
 * in Redis, so the next node a client reaches resumes them.
 *
 * 5.0 clients get DISCONNECT with a redirect reason [MQTT-4.11] (§3.14.2.1):
 * - 0x9D Server moved with Server Reference (§3.14.2.2.6) when `serverReference` is configured:
 *   "the Client should permanently change its Server", and this node is leaving for good;
 * - 0x9C Use another server otherwise: "temporarily use another server" — the client reconnects
 *   through the load balancer, which has stopped sending traffic to this node.
 * 3.1.1 and 3.1 clients have no server-side DISCONNECT: the connection is closed and they
 * reconnect through the load balancer.
 */

export const USE_ANOTHER_SERVER = 0x9c
export const SERVER_MOVED = 0x9d

export interface DrainResult {
  /** 5.0 clients sent DISCONNECT with a redirect reason. */
  readonly redirected: number
  /** 3.1/3.1.1 clients whose connection was closed. */
  readonly closed: number
  readonly reasonCode: number
}

export function localClients(aedes: Aedes): Client[] {
  return Object.values(clientsOf(aedes))
}

export async function drainClients(aedes: Aedes, serverReference: string | undefined): Promise<DrainResult> {
  const reasonCode = serverReference ? SERVER_MOVED : USE_ANOTHER_SERVER
  let redirected = 0
  let closed = 0
  await Promise.all(localClients(aedes).map((client) => new Promise<void>((resolve) => {
    if (client.closed) return resolve()
    if (client.version === 5) {
      redirected++
      client.disconnect({ reasonCode, ...(serverReference ? { properties: { serverReference } } : {}) }, () => resolve())
    } else {
      closed++
      client.close(() => resolve())
    }
  })))
  return { redirected, closed, reasonCode }
}
