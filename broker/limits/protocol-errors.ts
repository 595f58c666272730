import type { Client } from 'aedes'
import { disconnectClient, sendDisconnect } from './refuse.js'
import { internals } from '../core/aedes-adapter.js'

/*
 * Telling a 5.0 client why its connection ends on bad input. aedes closes the connection on a
 * malformed packet, a second CONNECT or a wildcard in a PUBLISH topic, but sends nothing first;
 * the 5.0 spec lets the server send DISCONNECT with a reason code before closing [MQTT-4.13.1-1],
 * [MQTT-4.13.2-1]. These listeners run before aedes' own (prepended on the packet parser), write
 * the DISCONNECT, and leave the closing to aedes. 3.1.1 has no server DISCONNECT: nothing to add.
 * One error aedes lets through is ended here: a client PUBLISH with a Subscription Identifier.
 */

export const MALFORMED_PACKET = 0x81
export const PROTOCOL_ERROR = 0x82
export const PACKET_TOO_LARGE = 0x95

interface PacketLike {
  cmd: string
  topic?: string
  properties?: { subscriptionIdentifier?: unknown }
}

const hasWildcard = (topic: string): boolean => topic.includes('+') || topic.includes('#')

/** Invalid UTF-8 decodes to U+FFFD; U+0000 is forbidden in strings [MQTT-1.5.4-1], [MQTT-1.5.4-2]. */
export function badUtf8(value: string): boolean {
  return value.includes('\uFFFD') || value.includes('\u0000')
}

/** Call once the client sent a 5.0 CONNECT. */
export function explainProtocolErrors(client: Client): void {
  const parser = internals(client)._parser as NodeJS.EventEmitter | undefined
  if (!parser) return
  parser.prependListener('error', (err: Error) => sendDisconnect(client, MALFORMED_PACKET, `malformed packet: ${err.message}`))
  // aedes sends 0x95 itself only once the session is fully restored (`connected`); a client that
  // sends right after the CONNACK gets a bare close without this. [MQTT-3.2.2-15]
  client.prependListener('error', (err: Error & { size?: number; maximumPacketSize?: number }) => {
    if (err.message === 'packet too large') sendDisconnect(client, PACKET_TOO_LARGE, `packet of ${err.size} bytes, above the Maximum Packet Size ${err.maximumPacketSize}`)
  })
  parser.prependListener('packet', (packet: PacketLike) => {
    if (packet.cmd === 'publish') {
      // [MQTT-3.3.2-2] A Topic Name must not contain wildcards: a rule of the protocol broken by a
      // well-formed packet, hence Protocol Error rather than Malformed Packet.
      if (packet.topic !== undefined && hasWildcard(packet.topic)) sendDisconnect(client, PROTOCOL_ERROR, `wildcard in the PUBLISH topic ${packet.topic.slice(0, 64)} [MQTT-3.3.2-2]`)
      // [MQTT-3.3.4-6] Subscription Identifiers go from server to client only: aedes would forward
      // this one to every subscriber. Ended here, before aedes routes the message (a Protocol
      // Error closes the connection, §4.13.2).
      else if (packet.properties?.subscriptionIdentifier !== undefined) {
        const refuse = (): void => disconnectClient(client, PROTOCOL_ERROR, 'a PUBLISH from a client must not carry a Subscription Identifier [MQTT-3.3.4-6]')
        // Before the CONNACK aedes queues this packet in the listener after this one, and a client
        // closed now has no queue left to put it in: an uncaught TypeError that ended the process.
        // Closed on the next tick instead, the close drops the queue with the packet in it, unrouted.
        if (internals(client).connackSent === true) refuse()
        else process.nextTick(refuse)
      }
    } else if (packet.cmd === 'connect') {
      // [MQTT-3.1.0-2] A second CONNECT is a Protocol Error.
      sendDisconnect(client, PROTOCOL_ERROR, 'second CONNECT on one connection [MQTT-3.1.0-2]')
    }
  })
}
