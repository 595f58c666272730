import type { Aedes, AedesPublishPacket, Client } from 'aedes'

/**
 * The parts of an aedes 2.0.0-beta.1 client that exist at run time but not in its type
 * declarations (lib/client.js, lib/handlers/connect.js). Kept in one place so an aedes upgrade
 * has one list to check.
 */
export interface AedesBroker extends Aedes {
  /** Counter aedes stamps on every packet it routes (with its id: the de-duplication key). */
  counter: number
  readonly persistence: {
    outgoingEnqueue(sub: { clientId: string }, packet: AedesPublishPacket): Promise<void>
    outgoingUpdate(client: Client, packet: AedesPublishPacket): Promise<unknown>
    outgoingClearMessageId(client: Client, packet: { messageId?: number }): Promise<unknown>
    createRetainedStreamCombi(patterns: string[]): NodeJS.ReadableStream
  }
}

export interface AedesClient extends Client {
  readonly broker: AedesBroker
  /** Granted subscriptions by topic filter. */
  readonly subscriptions: Record<string, { qos: number }>
  /** [MQTT-3.1.2-29] false when the client asked for no Reason Strings / User Properties. */
  readonly _requestProblemInformation?: boolean
  /** The CONNECT's Clean Start flag [MQTT-3.1.2-4] (`clean` is whether the session outlives the connection). */
  readonly _cleanStart?: boolean
  /** Per publishing node id, the highest message counter delivered (lib/client.js `dedupe`). */
  readonly duplicates: Record<string, number>
  /** True once aedes wrote the CONNACK; before it, packets that follow the CONNECT wait in a queue. */
  readonly connackSent?: boolean
  /**
   * [MQTT-3.2.2-21] Server Keep Alive: set before the CONNECT is handled, aedes sends it in the
   * CONNACK and times the connection by it (lib/handlers/connect.js setKeepAlive, doConnack).
   */
  _serverKeepAlive?: number
  /** Next packet identifier aedes hands out on this connection (1…65535). */
  _nextId: number
  /** aedes' per-client delivery functions, used by its subscriptions. */
  deliver0(packet: AedesPublishPacket, done: () => void): void
  deliverQoS(packet: AedesPublishPacket, done: () => void): void
}

export const internals = (client: Client): AedesClient => client as AedesClient

/** The next packet identifier of this connection, taken the way aedes' QoSPacket takes it. */
export function nextPacketId(client: AedesClient): number {
  const messageId = client._nextId
  client._nextId = messageId >= 65_535 ? 1 : messageId + 1
  return messageId
}
