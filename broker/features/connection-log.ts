import type { Aedes, Client } from 'aedes'
import type { Logger } from '../log.js'
import { connectionInfo } from '../connection-info.js'
import { clientIdentity } from '../auth/identity.js'

/*
 * One info line per MQTT client that connects and disconnects, with the real client address (the
 * PROXY header's source behind a load balancer), the listener and the username: what an operator
 * greps for when a device misbehaves. Listens to aedes' events, so it contributes no hook.
 */

/** Who a client is and where it connects from: for log lines and `$SYS` connect events. */
export function describeClient(client: Client): Record<string, unknown> {
  const info = connectionInfo(client)
  return {
    clientId: client.id,
    username: clientIdentity(client)?.username,
    remoteAddress: info?.remoteAddress,
    remotePort: info?.remotePort,
    listener: info?.listener,
    proxied: info?.proxied,
    tlsCommonName: info?.tlsCommonName,
    protocolVersion: client.version,
  }
}

const where = (fields: Record<string, unknown>): string =>
  `${String(fields.remoteAddress ?? 'unknown')}:${String(fields.remotePort ?? 0)} on ${String(fields.listener ?? 'unknown listener')}`

export function logClientConnections(aedes: Aedes, log: Logger): void {
  aedes.on('client', (client) => {
    const fields = describeClient(client)
    log.info(fields, `client ${client.id} connected from ${where(fields)}`)
  })
  aedes.on('clientDisconnect', (client) => {
    const fields = { ...describeClient(client), reasonCode: client.disconnectReasonCode ?? undefined }
    log.info(fields, `client ${client.id} disconnected from ${where(fields)}`)
  })
  // Errors before CONNECT (garbage, a wrong protocol, a timeout): per connection and caused by the
  // peer, so debug, with the address that lets an operator find the sender.
  aedes.on('connectionError', (client, err) => {
    const fields = describeClient(client)
    log.debug({ ...fields, err: err.message }, `connection from ${where(fields)} failed before CONNECT: ${err.message}`)
  })
}
