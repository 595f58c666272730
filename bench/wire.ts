import net from 'node:net'
import mqttPacket from 'mqtt-packet'

/*
 * A lean MQTT 3.1.1 client for load generation: raw sockets, packets encoded once with
 * mqtt-packet and reused as byte templates, and a frame scanner that reads only the bytes the
 * generator needs (packet type, packet identifier, payload offset) instead of building a packet
 * object per message. MQTT.js, and mqtt-packet's own parser, allocate per packet and run out of
 * CPU before a broker does (see docs/bench.md for the measurement).
 */

export interface Endpoint {
  readonly host: string
  readonly port: number
}

/** MQTT control packet types, the high nibble of the fixed header [MQTT-2.2.1]. */
export const PacketType = Object.freeze({
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  SUBACK: 9,
  PINGRESP: 13,
})

const PROTOCOL_VERSION = 4

/** A whole packet inside `buf`: its first byte and the bounds of what follows the fixed header. */
export type FrameHandler = (firstByte: number, buf: Buffer, bodyStart: number, bodyEnd: number) => void

/**
 * Splits a byte stream into MQTT packets. A packet split across reads is kept until the rest
 * arrives; everything else is handed over in place, without copying.
 */
export class FrameScanner {
  private pending: Buffer | undefined

  constructor(private readonly onFrame: FrameHandler) {}

  feed(chunk: Buffer): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk
    this.pending = undefined
    let pos = 0
    while (pos < buf.length) {
      // Remaining Length: up to four bytes, seven bits each [MQTT-2.2.3].
      let length = 0
      let multiplier = 1
      let cursor = pos + 1
      let complete = false
      while (cursor < buf.length && cursor <= pos + 4) {
        const byte = buf[cursor++]
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete || cursor + length > buf.length) break
      this.onFrame(buf[pos], buf, cursor, cursor + length)
      pos = cursor + length
    }
    if (pos < buf.length) this.pending = Buffer.from(buf.subarray(pos))
  }
}

/** Offset of a PUBLISH payload and its packet identifier (0 for QoS 0). */
export function publishLayout(firstByte: number, buf: Buffer, bodyStart: number): { payloadStart: number; packetId: number } {
  const qos = (firstByte >> 1) & 0x03
  const topicEnd = bodyStart + 2 + buf.readUInt16BE(bodyStart)
  // The packet identifier follows the topic only for QoS 1 and 2 [MQTT-3.3.2-2].
  return qos === 0 ? { payloadStart: topicEnd, packetId: 0 } : { payloadStart: topicEnd + 2, packetId: buf.readUInt16BE(topicEnd) }
}

/** PUBACK for `packetId`: four bytes [MQTT-3.4]. */
export function writePuback(target: Buffer, offset: number, packetId: number): void {
  target[offset] = 0x40
  target[offset + 1] = 0x02
  target.writeUInt16BE(packetId, offset + 2)
}

/** A PUBLISH encoded once; QoS 1 copies get their packet identifier patched in. */
export class PublishTemplate {
  readonly bytes: Buffer
  /** Where the packet identifier sits (QoS 1), or -1. */
  private readonly idOffset: number
  /** Where the payload starts. */
  readonly payloadOffset: number

  constructor(topic: string, payload: Buffer, readonly qos: 0 | 1) {
    this.bytes = mqttPacket.generate({ cmd: 'publish', topic, payload, qos, messageId: qos ? 1 : undefined, dup: false, retain: false })
    this.payloadOffset = this.bytes.length - payload.length
    this.idOffset = qos ? this.payloadOffset - 2 : -1
  }

  /** Writes one copy at `offset` of `target` with `packetId` (QoS 1). */
  copyInto(target: Buffer, offset: number, packetId: number): void {
    this.bytes.copy(target, offset)
    if (this.idOffset >= 0) target.writeUInt16BE(packetId, offset + this.idOffset)
  }
}

export interface ConnectOptions {
  readonly clientId: string
  /** Seconds; the generator's clients never idle long enough to need PINGREQ. */
  readonly keepalive?: number
  /** Source address, so that many connections do not exhaust one address's ephemeral ports. */
  readonly localAddress?: string
  readonly timeoutMs?: number
  /** Clean Session (default true); false keeps a persistent session, stored by the broker. */
  readonly clean?: boolean
}

/** A connected MQTT session over a raw socket; the caller owns reading after `connect`. */
export class WireClient {
  private readonly scanner: FrameScanner
  private frameHandler: FrameHandler = () => {}
  /** Runs after each read has been scanned, so replies to its packets go out in one write. */
  afterRead: () => void = () => {}

  private constructor(readonly socket: net.Socket) {
    this.scanner = new FrameScanner((first, buf, start, end) => this.frameHandler(first, buf, start, end))
    socket.on('data', (chunk: Buffer) => {
      this.scanner.feed(chunk)
      this.afterRead()
    })
  }

  /** Connects, sends CONNECT (clean session unless `clean: false`) and resolves on a successful CONNACK. */
  static async connect(endpoint: Endpoint, options: ConnectOptions): Promise<WireClient> {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port, localAddress: options.localAddress, noDelay: true })
    const client = new WireClient(socket)
    const timeoutMs = options.timeoutMs ?? 30_000
    const connack = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no CONNACK from ${endpoint.host}:${endpoint.port} within ${timeoutMs} ms`)), timeoutMs)
      socket.once('error', (err) => {
        clearTimeout(timer)
        reject(new Error(`${options.clientId} → ${endpoint.host}:${endpoint.port}: ${err.message}`))
      })
      socket.once('close', () => {
        clearTimeout(timer)
        reject(new Error(`${endpoint.host}:${endpoint.port} closed the connection of ${options.clientId} before CONNACK`))
      })
      client.onFrame((first, buf, start) => {
        if (first >> 4 !== PacketType.CONNACK) return
        clearTimeout(timer)
        // Return code 0 = accepted [MQTT-3.2.2.3].
        const code = buf[start + 1]
        if (code === 0) resolve()
        else reject(new Error(`${endpoint.host}:${endpoint.port} refused ${options.clientId} with CONNACK return code ${code}`))
      })
    })
    socket.once('connect', () => {
      socket.write(mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: PROTOCOL_VERSION,
        clientId: options.clientId,
        clean: options.clean ?? true,
        keepalive: options.keepalive ?? 120,
      }))
    })
    await connack
    socket.removeAllListeners('error')
    socket.removeAllListeners('close')
    socket.on('error', () => {})
    return client
  }

  onFrame(handler: FrameHandler): void {
    this.frameHandler = handler
  }

  /** Subscribes and resolves on SUBACK; rejects if the broker refused the filter. */
  async subscribe(filter: string, qos: 0 | 1): Promise<void> {
    const previous = this.frameHandler
    await new Promise<void>((resolve, reject) => {
      this.onFrame((first, buf, start, end) => {
        if (first >> 4 !== PacketType.SUBACK) return previous(first, buf, start, end)
        this.frameHandler = previous
        // 0x80 = failure [MQTT-3.9.3].
        if (buf[end - 1] === 0x80) reject(new Error(`the broker refused the subscription to ${filter}`))
        else resolve()
      })
      this.socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] }))
    })
  }

  /** Sends DISCONNECT and closes the socket. */
  close(): void {
    if (this.socket.destroyed) return
    this.socket.end(Buffer.from([0xe0, 0x00]))
    this.socket.destroySoon()
  }
}
