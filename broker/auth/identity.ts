import type { Client } from 'aedes'
import type { Socket } from 'node:net'
import { connectionInfo } from '../connection-info.js'
import type { Role } from './users.js'

/*
 * Who a connected client is, as authentication established it. The ACL and anything else that
 * needs the username or roles reads it here: aedes keeps no username on the client.
 */

export interface ClientIdentity {
  /** The MQTT username, or the certificate CN when the listener uses it as the username. */
  readonly username?: string
  readonly roles: readonly Role[]
  readonly method: 'password' | 'certificate' | 'anonymous'
}

const identities = new WeakMap<Client, ClientIdentity>()

export function setClientIdentity(client: Client, identity: ClientIdentity): void {
  identities.set(client, identity)
}

export function clientIdentity(client: Client): ClientIdentity | undefined {
  return identities.get(client)
}

/** The real client address (behind PROXY protocol when the listener recorded it). */
export function clientAddress(client: Client): string | undefined {
  return connectionInfo(client)?.remoteAddress ?? (client.conn as Partial<Socket>).remoteAddress
}
