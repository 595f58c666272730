import type { Client } from 'aedes'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import { internals } from '../core/aedes-adapter.js'

/*
 * Refusing a connection or dropping a connected client with the reason the protocol has for it.
 *
 * aedes sends no CONNACK when `preConnect` fails (lib/handlers/connect.js `negate` only answers a
 * redirect), so a feature that refuses a CONNECT throws a `ConnectRefusal` and the composed
 * preConnect (hooks.ts) writes the CONNACK itself before aedes closes the socket.
 */

/** MQTT 5.0 reason codes FleetMQ sends itself [MQTT-2.4]. */
export const REASON = Object.freeze({
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  SERVER_UNAVAILABLE: 0x88,
  BANNED: 0x8a,
  TOPIC_NAME_INVALID: 0x90,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  QUOTA_EXCEEDED: 0x97,
  ADMINISTRATIVE_ACTION: 0x98,
  CONNECTION_RATE_EXCEEDED: 0x9f,
})

/** MQTT 3.1/3.1.1 CONNACK return codes: the only ones valid on the wire are 0..5 [MQTT-3.2.2-3.1.1 Table 3.1]. */
export const RETURN_CODE = Object.freeze({
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  NOT_AUTHORIZED: 5,
})

export class ConnectRefusal extends Error {
  /**
   * @param reasonCode CONNACK reason code for 5.0 clients
   * @param returnCode CONNACK return code for 3.1/3.1.1 clients (1..5)
   * @param message why, for the log and the 5.0 Reason String
   */
  constructor(readonly reasonCode: number, readonly returnCode: number, message: string) {
    super(message)
    this.name = 'ConnectRefusal'
  }
}

/** A Variable Byte Integer [MQTT-1.5.5]: 7 bits a byte, the high bit set on every byte but the last. */
export function variableByteInteger(value: number): number[] {
  const bytes: number[] = []
  do {
    let byte = value % 128
    value = Math.floor(value / 128)
    if (value > 0) byte |= 0x80
    bytes.push(byte)
  } while (value > 0)
  return bytes
}

/**
 * The CONNACK bytes for a refusal. 3.1.1: `20 02 00 rc` [MQTT-3.2]. 5.0: flags, reason code and a
 * Reason String property (0x1F), which a CONNACK may carry whatever Request Problem Information
 * says [MQTT-3.1.2-29 applies to packets other than PUBLISH, CONNACK, DISCONNECT].
 */
export function connackBytes(protocolVersion: number, refusal: ConnectRefusal): Buffer {
  if (protocolVersion !== 5) return Buffer.from([0x20, 0x02, 0x00, refusal.returnCode])
  const reason = Buffer.from(refusal.message.slice(0, 200), 'utf8')
  const properties = [0x1f, reason.length >> 8, reason.length & 0xff, ...reason]
  const body = [0x00, refusal.reasonCode, ...variableByteInteger(properties.length), ...properties]
  return Buffer.from([0x20, ...variableByteInteger(body.length), ...body])
}

/** A 5.0 DISCONNECT with a reason code and a Reason String (0x1F) [MQTT-3.14]. */
export function disconnectBytes(reasonCode: number, reasonString: string): Buffer {
  const reason = Buffer.from(reasonString.slice(0, 200), 'utf8')
  const properties = [0x1f, reason.length >> 8, reason.length & 0xff, ...reason]
  const body = [reasonCode, ...variableByteInteger(properties.length), ...properties]
  return Buffer.from([0xe0, ...variableByteInteger(body.length), ...body])
}

/** Writes the refusal CONNACK and resolves once it left the process (or the stream failed). */
export function writeRefusal(conn: Duplex, protocolVersion: number, refusal: ConnectRefusal): Promise<void> {
  return new Promise((resolve) => {
    if (conn.destroyed || !conn.writable) {
      resolve()
      return
    }
    conn.write(connackBytes(protocolVersion, refusal), () => resolve())
  })
}

/** How long a connection that was sent a DISCONNECT is still read, waiting for the client to close its side: ms. */
const LINGER_MS = 2_000
const ignore = (): void => {}

/**
 * [MQTT-3.14.4-2] After its DISCONNECT the server closes the network connection. A TCP socket
 * closed while its peer is still sending (PUBRELs, a PINGREQ: a client learns of the DISCONNECT
 * only when it reads) answers those bytes with a reset, and a client's next write (EPIPE) or read
 * (ECONNRESET) can then fail before it has read the DISCONNECT: an interoperability suite saw a
 * reset instead of 0x93. So this connection closes gracefully: aedes' close ends with
 * `conn.destroy()`, which here sends FIN after the DISCONNECT, reads and drops whatever the
 * client still sends, and destroys the socket once the client closed its side, or after LINGER_MS.
 * Nothing more is handled from the connection: aedes detached its parser first. WebSocket streams
 * are left alone (their close is a handshake of its own).
 */
function closeAfterPeer(conn: Duplex): void {
  if (!(conn instanceof net.Socket)) return
  const destroy = conn.destroy.bind(conn)
  let closing = false
  conn.destroy = (err?: Error) => {
    // Once closing, later calls are aedes answering packets it read after the close (handlers/index.js
    // destroys, then fails them as 'Invalid protocol'): the close under way stands.
    if (closing) return conn
    if (err !== undefined || conn.destroyed) return destroy(err)
    closing = true
    const timer = setTimeout(() => destroy(), LINGER_MS)
    timer.unref()
    conn.once('end', () => {
      clearTimeout(timer)
      destroy()
    })
    conn.on('data', ignore)
    conn.end()
    conn.resume()
    return conn
  }
}

/**
 * Writes a 5.0 DISCONNECT with `reasonCode` and a Reason String [MQTT-3.14.2], once the CONNACK is
 * out (aedes may still be restoring the session: its `connected` comes later, and its own
 * `disconnect()` writes nothing before). Records the code for the disconnect log line. Does not
 * close: the caller or aedes does, and then the client reads the DISCONNECT before the connection
 * ends (see closeAfterPeer).
 */
export function sendDisconnect(client: Client, reasonCode: number, reasonString: string): void {
  const state = internals(client)
  const conn = client.conn as Duplex
  if (client.version !== 5 || !state.connackSent || client.closed || conn.destroyed) return
  state.disconnectReasonCode = reasonCode
  conn.write(disconnectBytes(reasonCode, reasonString))
  // mqtt-packet corks the stream while it writes and uncorks on the next tick; a close before that
  // would discard the DISCONNECT. Flush it now.
  while (conn.writableCorked > 0) conn.uncork()
  closeAfterPeer(conn)
}

/**
 * Ends a client at once: a 5.0 client gets DISCONNECT with `reasonCode` first, a 3.1.1 client
 * (which has no server DISCONNECT) just the close. `connected` is cleared before the close so that
 * nothing aedes was about to send (a PUBACK for the offending PUBLISH) follows the DISCONNECT
 * [MQTT-3.14.4-1]. A client that stopped reading never sees the DISCONNECT: its socket is full.
 */
export function disconnectClient(client: Client, reasonCode: number, reasonString: string): void {
  if (client.closed) return
  sendDisconnect(client, reasonCode, reasonString)
  internals(client).connected = false
  client.close()
}
