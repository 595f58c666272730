import mqttPacket, { type Packet } from 'mqtt-packet'

/*
 * aedes' own write() (lib/write.js, not exported by its package), for the path FleetMQ runs in
 * its place (mqtt/fast-publish.ts): serialize through mqtt-packet's writeToStream (and so through
 * wire.ts' taps and lean encoder) with the connection's protocol version, and call back after a
 * turn, or once the socket drained when it asked to wait.
 */

export interface WritableClient {
  readonly conn: NodeJS.WritableStream
  readonly connected: boolean
  readonly connecting: boolean
  readonly errored: boolean
  readonly _wireVersion: number | null
  waitForDrain(done: (err?: Error | null) => void): void
}

const WRITE_OPTIONS: Record<number, { protocolVersion: number }> = {
  3: Object.freeze({ protocolVersion: 3 }),
  4: Object.freeze({ protocolVersion: 4 }),
  5: Object.freeze({ protocolVersion: 5 }),
}

const serializer = mqttPacket as unknown as { writeToStream(p: Packet, s: NodeJS.WritableStream, o: object): boolean }

export function writeLikeAedes(client: WritableClient, packet: Packet, done: (err?: Error | null) => void): void {
  if (!client.connecting && !client.connected) {
    setImmediate(done, new Error('connection closed'))
    return
  }
  let written: boolean
  try {
    // Looked up at call time: wire.ts replaces writeToStream on the module object.
    written = serializer.writeToStream(packet, client.conn, WRITE_OPTIONS[client._wireVersion ?? 4] ?? WRITE_OPTIONS[4])
  } catch (err) {
    setImmediate(done, new Error('packet received not valid', { cause: err }))
    return
  }
  if (!written && !client.errored) client.waitForDrain(done)
  else setImmediate(done, null)
}
