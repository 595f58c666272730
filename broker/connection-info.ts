import type { Client } from 'aedes'

/**
 * What the listener learned about a connection before MQTT began: which listener accepted it,
 * the real client address (from the PROXY header when one was sent), and the TLS client
 * certificate's CN. Listeners record it against the stream they hand to aedes; auth, ACL, limits,
 * logs and `$SYS` read it through the client.
 */
export interface ConnectionInfo {
  /** Listener name (`mqtt:1883`, or the configured name). */
  readonly listener: string
  /** The real client address: the PROXY header's source when present, else the socket's peer. */
  readonly remoteAddress: string
  readonly remotePort: number
  /** True when the address came from a PROXY protocol header. */
  readonly proxied: boolean
  /** CN of a verified TLS client certificate. */
  readonly tlsCommonName?: string
}

const infos = new WeakMap<object, ConnectionInfo>()

export function recordConnectionInfo(stream: object, info: ConnectionInfo): void {
  infos.set(stream, info)
}

export function connectionInfo(client: Client): ConnectionInfo | undefined {
  return infos.get(client.conn)
}
