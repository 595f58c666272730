import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import type { Endpoint } from './wire.js'

/*
 * The lean side of the load generator, for the throughput shapes: one process must outrun a broker
 * that delivers ~300k msg/s on one core, so nothing here allocates per message. Every socket reads
 * through `onread` into one shared buffer (the callback runs synchronously, so one buffer serves all
 * of them), a frame scanner reads only the first byte and, for QoS 1, the packet identifier of each
 * packet, and packets are encoded once and written as they are (or patched in place where a packet
 * identifier changes and the previous copy has been acknowledged, so it has left the process).
 */

/** MQTT control packet types, the high nibble of the fixed header [MQTT-2.2.1]. */
const CONNACK = 2
const PUBLISH = 3
const PUBACK = 4
const SUBACK = 9

const READ_BUFFER = Buffer.allocUnsafe(1 << 20)

/** Called for every whole packet: its first byte and where its variable header starts and the packet ends. */
type OnFrame = (first: number, buf: Buffer, bodyStart: number, end: number) => void

/**
 * A raw MQTT 3.1.1 connection. Packets split across reads (a few per read at most) are copied out
 * and completed on the next read; all others are scanned in place in the shared read buffer.
 */
export class LeanClient {
  readonly socket: net.Socket
  onFrame: OnFrame = () => {}
  /** Runs after each read's packets, so their replies can leave in one write. */
  afterRead: () => void = () => {}
  private pending: Buffer | undefined
  /**
   * When set, the socket is left unread this long after each read, so that a busy receiver takes
   * its messages a few hundred at a time, as a backend consumer does, rather than one read per
   * message: a broker that writes each message on its own (mosquitto) would otherwise cost the
   * generator one wake-up and one read per message, and the generator, not the broker, would
   * set the rate. The kernel's receive buffer holds what arrives meanwhile.
   */
  readPauseMs = 0

  private constructor(endpoint: Endpoint, localAddress?: string) {
    this.socket = net.connect({
      host: endpoint.host,
      port: endpoint.port,
      localAddress,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => this.read(buf as Buffer, n) },
    })
  }

  private read(buf: Buffer, n: number): boolean {
    let data = buf
    let end = n
    if (this.pending) {
      data = Buffer.concat([this.pending, buf.subarray(0, n)])
      end = data.length
      this.pending = undefined
    }
    let pos = 0
    while (pos < end) {
      // Remaining Length: up to four bytes, seven bits each [MQTT-2.2.3]; one byte for every packet here but SUBACK/CONNACK-sized ones.
      let length = 0
      let shift = 0
      let cursor = pos + 1
      let complete = false
      while (cursor < end && cursor <= pos + 4) {
        const byte = data[cursor++]
        length |= (byte & 0x7f) << shift
        shift += 7
        if ((byte & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete || cursor + length > end) break
      this.onFrame(data[pos], data, cursor, cursor + length)
      pos = cursor + length
    }
    if (pos < end) this.pending = Buffer.from(data.subarray(pos, end))
    this.afterRead()
    if (this.readPauseMs > 0) {
      this.socket.pause()
      setTimeout(() => this.socket.resume(), this.readPauseMs)
    }
    return true
  }

  /** Connects with a clean session and resolves on CONNACK 0. */
  static async connect(endpoint: Endpoint, clientId: string, localAddress?: string, timeoutMs = 30_000): Promise<LeanClient> {
    const client = new LeanClient(endpoint, localAddress)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no CONNACK for ${clientId} from ${endpoint.host}:${endpoint.port} within ${timeoutMs} ms`)), timeoutMs)
      client.socket.once('error', (err) => {
        clearTimeout(timer)
        reject(new Error(`${clientId} → ${endpoint.host}:${endpoint.port}: ${err.message}`))
      })
      client.onFrame = (first, buf, start) => {
        if (first >> 4 !== CONNACK) return
        clearTimeout(timer)
        // Return code 0 = accepted [MQTT-3.2.2.3].
        if (buf[start + 1] === 0) resolve()
        else reject(new Error(`${endpoint.host}:${endpoint.port} refused ${clientId} with CONNACK return code ${buf[start + 1]}`))
      }
      client.socket.once('connect', () => {
        client.socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 300 }))
      })
    })
    client.socket.removeAllListeners('error')
    client.socket.on('error', () => {})
    client.onFrame = () => {}
    return client
  }

  /** Subscribes and resolves on SUBACK; rejects if the broker refused the filter (0x80) [MQTT-3.9.3]. */
  async subscribe(filter: string, qos: 0 | 1): Promise<void> {
    const handler = this.onFrame
    await new Promise<void>((resolve, reject) => {
      this.onFrame = (first, buf, start, end) => {
        if (first >> 4 !== SUBACK) return handler(first, buf, start, end)
        this.onFrame = handler
        if (buf[end - 1] === 0x80) reject(new Error(`the broker refused the subscription to ${filter}`))
        else resolve()
      }
      this.socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] }))
    })
  }

  close(): void {
    if (this.socket.destroyed) return
    this.socket.end(Buffer.from([0xe0, 0x00]))
    this.socket.destroySoon()
  }
}

/** A PUBLISH encoded once; `idOffset` is where a QoS 1 packet identifier sits (-1 for QoS 0). */
export function encodePublish(topic: string, payload: Buffer, qos: 0 | 1): { bytes: Buffer; idOffset: number } {
  const bytes = mqttPacket.generate({ cmd: 'publish', topic, payload, qos, messageId: qos ? 1 : undefined, dup: false, retain: false })
  return { bytes, idOffset: qos ? bytes.length - payload.length - 2 : -1 }
}

/** Offset of a PUBLISH payload in `buf`, and its packet identifier (0 for QoS 0) [MQTT-3.3.2-2]. */
export function publishPayload(first: number, buf: Buffer, bodyStart: number): { payloadStart: number; packetId: number } {
  const topicEnd = bodyStart + 2 + ((buf[bodyStart] << 8) | buf[bodyStart + 1])
  return (first & 0x06) === 0 ? { payloadStart: topicEnd, packetId: 0 } : { payloadStart: topicEnd + 2, packetId: (buf[topicEnd] << 8) | buf[topicEnd + 1] }
}

/** A receiver counting PUBLISH packets and acknowledging QoS 1 ones, one write per read. */
export function countPublishes(client: LeanClient, onMessage: (first: number, buf: Buffer, payloadStart: number) => void): void {
  const acks = Buffer.allocUnsafe(64 * 1024)
  let ackBytes = 0
  client.onFrame = (first, buf, start) => {
    if (first >> 4 === PUBLISH) {
      const { payloadStart, packetId } = publishPayload(first, buf, start)
      if (packetId) {
        if (ackBytes + 4 > acks.length) {
          client.socket.write(Buffer.from(acks.subarray(0, ackBytes)))
          ackBytes = 0
        }
        // PUBACK [MQTT-3.4]: 0x40, remaining length 2, packet identifier.
        acks[ackBytes] = 0x40
        acks[ackBytes + 1] = 2
        acks[ackBytes + 2] = packetId >> 8
        acks[ackBytes + 3] = packetId & 0xff
        ackBytes += 4
      }
      onMessage(first, buf, payloadStart)
    }
  }
  client.afterRead = () => {
    if (ackBytes) {
      client.socket.write(Buffer.from(acks.subarray(0, ackBytes)))
      ackBytes = 0
    }
  }
}

/** Counts PUBACKs on a publisher. */
export function countPubacks(client: LeanClient, onPuback: () => void): void {
  client.onFrame = (first) => {
    if (first >> 4 === PUBACK) onPuback()
  }
}
