import type { Client } from 'aedes'

/** DISCONNECT reason codes that send a client elsewhere [MQTT-3.14.2.1]. */
export const USE_ANOTHER_SERVER = 0x9C
export const SERVER_MOVED = 0x9D
export type RedirectReasonCode = typeof USE_ANOTHER_SERVER | typeof SERVER_MOVED

/**
 * Sends a client to another server: a 5.0 client gets DISCONNECT 0x9C (Use another server, for a
 * while: drains, restarts) or 0x9D (Server moved, for good) with the Server Reference
 * [MQTT-3.14.2.2.7] and a Reason String; 3.1/3.1.1 have no such packet, so their connection is
 * closed and they reconnect through the load balancer. Resolves once the connection is closed.
 */
export function redirectClient(client: Client, reasonCode: RedirectReasonCode, serverReference: string): Promise<void> {
  return new Promise((resolve) => {
    client.disconnect({
      reasonCode,
      properties: { serverReference, reasonString: redirectReason(reasonCode, serverReference) },
    }, () => resolve())
  })
}

export function redirectReason(reasonCode: number, serverReference: string): string {
  return reasonCode === SERVER_MOVED
    ? `this client's server has moved to ${serverReference}`
    : `use another server for now: ${serverReference}`
}
