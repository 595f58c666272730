import type { Socket } from 'node:net'
import type { Packet, IConnectPacket } from 'mqtt-packet'
import { rawClient, type ProtocolVersion } from './raw-client.js'

/**
 * A bare MQTT client that is already connected: it sends exactly what a test writes and
 * acknowledges nothing by itself, so tests can hold PUBACKs back, watch every packet the broker
 * sends and read the properties as they came over the wire. (A thin layer over `rawClient`.)
 */
export interface RawClient {
  readonly packets: Packet[]
  readonly socket: Socket
  send(packet: Packet): void
  /** Resolves with the first packet (already received or later) that matches. */
  waitFor<T extends Packet = Packet>(match: (p: Packet) => boolean, timeoutMs?: number): Promise<T>
  /** Resolves when the broker closes the connection. */
  readonly closed: Promise<void>
  /** Drops the TCP connection without DISCONNECT (an abrupt loss). */
  destroy(): void
}

/** Connects and resolves once the broker accepted the CONNECT; rejects with the refusal code otherwise. */
export async function rawConnect(port: number, connect: Partial<IConnectPacket> & { clientId: string }, version: ProtocolVersion = 5): Promise<RawClient> {
  const raw = await rawClient(port, version)
  const connack = await raw.connect(connect)
  if ('reasonCode' in connack && connack.reasonCode && connack.reasonCode >= 0x80) throw new Error(`CONNACK refused: 0x${connack.reasonCode.toString(16)}`)
  if ('returnCode' in connack && connack.returnCode) throw new Error(`CONNACK refused: ${connack.returnCode}`)
  return {
    packets: raw.received,
    socket: raw.socket,
    send: (packet) => raw.send(packet),
    waitFor: (match, timeoutMs) => raw.waitForPacket(match, timeoutMs),
    closed: raw.whenClosed,
    destroy: () => raw.destroy(),
  }
}
