import net from 'node:net'
import { once } from 'node:events'
import mqttPacket, { type Packet } from 'mqtt-packet'

/*
 * A raw MQTT client on a plain socket: sends packets built with mqtt-packet (or any bytes a test
 * crafts), parses what the broker answers, and can stop reading to play a stuck subscriber. For
 * tests of what third-party clients never send: malformed packets, refused CONNECTs, limits.
 */

export type ProtocolVersion = 3 | 4 | 5

export interface RawClient {
  readonly socket: net.Socket
  /** Every packet the broker sent, in order. */
  readonly received: Packet[]
  /** Encodes and writes a packet with this client's protocol version. */
  send(packet: Packet): void
  /** Writes bytes as they are. */
  sendRaw(bytes: Buffer): void
  /** Resolves with the first received packet (already received or later) that matches. */
  waitForPacket<T extends Packet = Packet>(match: (packet: Packet) => boolean, timeoutMs?: number): Promise<T>
  /** Resolves with the first received packet of this type (already received or later) that matches. */
  waitFor<C extends Packet['cmd']>(cmd: C, match?: (packet: Extract<Packet, { cmd: C }>) => boolean, timeoutMs?: number): Promise<Extract<Packet, { cmd: C }>>
  /** Resolves once the broker closed the connection (or it was destroyed). */
  closed(timeoutMs?: number): Promise<void>
  /** Resolves when the connection closes, however long that takes. */
  readonly whenClosed: Promise<void>
  /** CONNECT and wait for the CONNACK. */
  connect(options?: Partial<Extract<Packet, { cmd: 'connect' }>>): Promise<Extract<Packet, { cmd: 'connack' }>>
  /** Stops reading from the socket: the broker's writes pile up in its buffers. */
  stopReading(): void
  destroy(): void
}

export function encode(packet: Packet, protocolVersion: ProtocolVersion): Buffer {
  return mqttPacket.generate(packet, { protocolVersion })
}

export async function rawClient(port: number, protocolVersion: ProtocolVersion = 5): Promise<RawClient> {
  const socket = net.connect({ host: '127.0.0.1', port })
  await once(socket, 'connect')
  const parser = mqttPacket.parser({ protocolVersion })
  const received: Packet[] = []
  const waiters: { match: (p: Packet) => boolean; resolve: (p: Packet) => void; reject: (err: Error) => void }[] = []
  parser.on('packet', (packet: Packet) => {
    received.push(packet)
    for (const waiter of [...waiters]) {
      if (waiter.match(packet)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(packet)
      }
    }
  })
  // Bytes the broker sent that mqtt-packet cannot parse fail every wait from then on, with the
  // parser's reason and the bytes: "nothing arrived" must never hide a packet nobody could read.
  let parseError: Error | undefined
  /** The last bytes received (up to about 64 KiB), for the error message. */
  const chunks: Buffer[] = []
  let chunkBytes = 0
  parser.on('error', (err: Error) => {
    parseError ??= new Error(`the broker sent bytes mqtt-packet cannot parse (${err.message}); packets parsed before: ${received.map((p) => p.cmd).join(', ') || 'none'}; bytes: ${Buffer.concat(chunks).toString('hex').slice(-400)}`)
    for (const waiter of waiters.splice(0)) waiter.reject(parseError)
  })
  socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk)
    chunkBytes += chunk.length
    while (chunks.length > 1 && chunkBytes > 65_536) chunkBytes -= chunks.shift()!.length
    parser.parse(chunk)
  })
  socket.on('error', () => { /* resets are expected when the broker drops us */ })
  const isClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()))

  const client: RawClient = {
    socket,
    received,
    whenClosed: isClosed,
    send(packet) {
      socket.write(encode(packet, protocolVersion))
    },
    sendRaw(bytes) {
      socket.write(bytes)
    },
    waitForPacket<T extends Packet>(test: (p: Packet) => boolean, timeoutMs = 10_000): Promise<T> {
      const seen = received.find(test)
      if (seen) return Promise.resolve(seen as T)
      if (parseError) return Promise.reject(parseError)
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1)
          reject(new Error(`no matching packet within ${timeoutMs} ms; received: ${received.map((p) => p.cmd).join(', ') || 'nothing'}`))
        }, timeoutMs)
        const waiter = { match: test, resolve: (p: Packet) => { clearTimeout(timer); resolve(p as T) }, reject: (err: Error) => { clearTimeout(timer); reject(err) } }
        waiters.push(waiter)
      })
    },
    waitFor(cmd, match = () => true, timeoutMs = 10_000) {
      type P = Extract<Packet, { cmd: typeof cmd }>
      return client.waitForPacket<P>((p) => p.cmd === cmd && match(p as P), timeoutMs)
        .catch((err: Error) => { throw err === parseError ? err : new Error(err.message.replace('no matching packet', `no ${cmd}`)) })
    },
    closed(timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the broker did not close the connection within ${timeoutMs} ms`)), timeoutMs)
        void isClosed.then(() => {
          clearTimeout(timer)
          if (parseError) reject(parseError)
          else resolve()
        })
      })
    },
    async connect(options = {}) {
      client.send({ cmd: 'connect', protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT', protocolVersion, clientId: `raw-${process.pid}-${Math.random().toString(16).slice(2, 10)}`, clean: true, keepalive: 60, ...options } as Packet)
      return client.waitFor('connack')
    },
    stopReading() {
      socket.pause()
      socket.removeAllListeners('data')
    },
    destroy() {
      socket.destroy()
    },
  }
  return client
}
