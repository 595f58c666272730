import { connect as tcpConnect, type Socket } from 'node:net'
import { once } from 'node:events'
import mqttPacket, { type Packet, type IConnectPacket } from 'mqtt-packet'

/**
 * A bare MQTT client on mqtt-packet: it sends exactly what a test writes and acknowledges nothing
 * by itself, so tests can hold PUBACKs back, watch every packet the broker sends and read the
 * properties as they came over the wire.
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

export async function rawConnect(port: number, connect: Partial<IConnectPacket> & { clientId: string }, version: 3 | 4 | 5 = 5): Promise<RawClient> {
  const socket = tcpConnect(port, '127.0.0.1')
  await once(socket, 'connect')
  const parser = mqttPacket.parser({ protocolVersion: version })
  const packets: Packet[] = []
  const waiters: { match: (p: Packet) => boolean; resolve: (p: Packet) => void }[] = []
  parser.on('packet', (packet: Packet) => {
    packets.push(packet)
    for (const waiter of [...waiters]) {
      if (waiter.match(packet)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(packet)
      }
    }
  })
  socket.on('data', (chunk: Buffer) => parser.parse(chunk))
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.on('error', () => {})
  const client: RawClient = {
    packets,
    socket,
    send(packet) {
      socket.write(mqttPacket.generate(packet, { protocolVersion: version }))
    },
    waitFor<T extends Packet>(match: (p: Packet) => boolean, timeoutMs = 10_000): Promise<T> {
      const seen = packets.find(match)
      if (seen) return Promise.resolve(seen as T)
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching packet within ${timeoutMs} ms; got ${JSON.stringify(packets.map((p) => p.cmd))}`)), timeoutMs)
        waiters.push({ match, resolve: (p) => { clearTimeout(timer); resolve(p as T) } })
      })
    },
    closed,
    destroy() {
      socket.destroy()
    },
  }
  client.send({
    cmd: 'connect',
    protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: version,
    clean: true,
    keepalive: 60,
    ...connect,
  } as IConnectPacket)
  const connack = await client.waitFor((p) => p.cmd === 'connack')
  if ('reasonCode' in connack && connack.reasonCode && connack.reasonCode >= 0x80) throw new Error(`CONNACK refused: 0x${connack.reasonCode.toString(16)}`)
  if ('returnCode' in connack && connack.returnCode) throw new Error(`CONNACK refused: ${connack.returnCode}`)
  return client
}
