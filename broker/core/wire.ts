import mqttPacket, { type Packet } from 'mqtt-packet'
import type { Client } from 'aedes'
import { BufferList, MqttPacketClass, brokerInternals, internals, replaceCodec, type ParserInternals, type WriteToStream } from './aedes-adapter.js'

/*
 * The two points every MQTT packet of an aedes connection passes through: the parser aedes creates
 * per connection (`mqttPacket.parser()`) and the serializer it writes with
 * (`mqttPacket.writeToStream()`). aedes looks both up on the mqtt-packet module object at call
 * time; the adapter (aedes-adapter.ts `replaceCodec`) replaces them there, once per process, so
 * that features observe every inbound packet before aedes handles it and decide on every outbound
 * packet before it reaches the socket. We need that where aedes has no hook: outbound flow control
 * ([MQTT-3.3.4-9] Receive Maximum, [MQTT-3.1.2-25] Maximum Packet Size), CONNACK and DISCONNECT
 * properties, and the `$share/` subscriptions aedes 2.0.0-beta.1 refuses before any hook runs.
 *
 * Only streams that carry an aedes client (`conn.client`, set by aedes' Client constructor) are
 * touched; anything else in the process that uses mqtt-packet is passed through unchanged.
 */

/** Sees an inbound packet before aedes does; may rewrite it in place. */
export type InboundTap = (client: Client, packet: Packet) => void

/**
 * Decides on an outbound packet: call `send` (now or later) with the packet to write, or don't
 * to drop it. The return value is the stream's backpressure answer (`false` = wait for drain).
 */
export type OutboundTap = (client: Client, packet: Packet, send: (packet: Packet) => boolean) => boolean

/** Which packets a tap sees: the others never reach it, so the hot path pays nothing for it. */
export interface TapFilter {
  readonly cmds: readonly Packet['cmd'][]
  /** Only packets of MQTT 5.0 connections. */
  readonly mqtt5Only?: boolean
}

interface Registered<T> {
  readonly tap: T
  readonly filter: TapFilter
}

type ClientStream = NodeJS.WritableStream & { client?: Client; cork?(): void; uncork?(): void; _writev?: unknown }

const inboundTaps: Registered<InboundTap>[] = []
const outboundTaps: Registered<OutboundTap>[] = []
/** Per command: the taps for any connection, and those for 5.0 connections (rebuilt when taps change). */
let inboundByCmd = new Map<string, { any: InboundTap[]; mqtt5: InboundTap[] }>()
let outboundByCmd = new Map<string, { any: OutboundTap[]; mqtt5: OutboundTap[] }>()
let installed = false
let originalWrite: WriteToStream

function index<T>(taps: readonly Registered<T>[]): Map<string, { any: T[]; mqtt5: T[] }> {
  const byCmd = new Map<string, { any: T[]; mqtt5: T[] }>()
  for (const { tap, filter } of taps) {
    for (const cmd of filter.cmds) {
      let entry = byCmd.get(cmd)
      if (entry === undefined) byCmd.set(cmd, entry = { any: [], mqtt5: [] })
      if (!filter.mqtt5Only) entry.any.push(tap)
      entry.mqtt5.push(tap)
    }
  }
  return byCmd
}

/*
 * Writes are coalesced per socket per event-loop turn. mqtt-packet corks the stream for one packet
 * and uncorks on the next tick, and aedes sends each delivery from its own setImmediate, so every
 * packet used to be its own writev(2) — a fifth of the broker's CPU under fan-in. The first write
 * to a socket in a turn corks it once more, and one setImmediate per turn uncorks every socket
 * written to: the packets of a turn leave in one syscall per socket. `writableLength` still counts
 * what waits (the slow-consumer limits read it) and write() still answers backpressure. Only
 * streams that gather writes (`_writev`: TCP and TLS sockets) are corked; a WebSocket stream sends
 * each write as its own frame anyway. Bytes written right before a `destroy()` must be flushed by
 * the caller (limits/refuse.ts sendDisconnect uncorks); aedes closes through write callbacks,
 * which run after the flush.
 */
const CORKED = Symbol('fleetmq.corked')
type CorkableStream = ClientStream & { [CORKED]?: boolean }
const corked: CorkableStream[] = []
let flushScheduled = false

function flushCorked(): void {
  flushScheduled = false
  // A stream corked again while this runs (a write from a callback) is appended and flushed too.
  for (let i = 0; i < corked.length; i++) {
    const stream = corked[i]
    stream[CORKED] = false
    stream.uncork!()
  }
  corked.length = 0
}

function coalesce(stream: CorkableStream): void {
  if (stream._writev === undefined || stream[CORKED] === true) return
  stream.cork!()
  stream[CORKED] = true
  corked.push(stream)
  if (!flushScheduled) {
    flushScheduled = true
    setImmediate(flushCorked)
  }
}

/*
 * mqtt-packet writes a packet as 4–6 separate chunks (header byte, length, topic length, topic,
 * payload), each a full pass through the stream machinery. The packet is gathered here instead,
 * synchronously, and reaches the socket as one Buffer (one WebSocket frame on ws/wss). A packet
 * above GATHER_LIMIT bytes goes out chunk by chunk, so a large payload is never copied.
 */
const GATHER_LIMIT = 16_384
const gathered: (Buffer | string)[] = []
let gatherError: Error | undefined
const gatherer = {
  write(chunk: Buffer | string): boolean {
    gathered.push(chunk)
    return true
  },
  // mqtt-packet destroys the stream on a packet it cannot encode; the real one is destroyed below.
  destroy(err?: Error): void {
    gatherError = err ?? new Error('mqtt-packet could not encode the packet')
  },
} as unknown as NodeJS.WritableStream

function writePacket(packet: Packet, stream: ClientStream, opts: object | undefined): boolean {
  const lean = packet.cmd === 'publish' || packet.cmd === 'puback' ? encodeLean(packet, (opts as { protocolVersion?: number } | undefined)?.protocolVersion ?? 4) : undefined
  if (lean !== undefined) return stream.write(lean)
  gathered.length = 0
  gatherError = undefined
  originalWrite(packet, gatherer, opts)
  if (gatherError !== undefined) {
    const err = gatherError
    gatherError = undefined
    gathered.length = 0
    ;(stream as unknown as { destroy(err: Error): void }).destroy(err)
    return false
  }
  let length = 0
  for (let i = 0; i < gathered.length; i++) {
    const chunk = gathered[i]
    length += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length
  }
  let result = true
  if (length <= GATHER_LIMIT) {
    const bytes = Buffer.allocUnsafe(length)
    let offset = 0
    for (let i = 0; i < gathered.length; i++) {
      const chunk = gathered[i]
      offset += typeof chunk === 'string' ? bytes.write(chunk, offset) : chunk.copy(bytes, offset)
    }
    result = stream.write(bytes)
  } else {
    for (let i = 0; i < gathered.length; i++) result = stream.write(gathered[i])
  }
  gathered.length = 0
  return result
}

/*
 * The hot path's two packets, PUBLISH and PUBACK, are encoded here straight into one Buffer (the
 * same bytes mqtt-packet writes: [MQTT-3.3.1], [MQTT-3.4.2]); mqtt-packet allocates per chunk and
 * builds a `debug()` argument array per call even when debugging is off. Anything unusual — MQTT
 * 5.0 properties, a non-zero PUBACK reason code, a string payload, a packet above GATHER_LIMIT —
 * returns undefined and takes mqtt-packet's path.
 */
function hasKeys(object: object): boolean {
  for (const key in object) if (Object.hasOwn(object, key)) return true
  return false
}

function encodeLean(packet: Packet, version: number): Buffer | undefined {
  if (packet.cmd === 'puback') {
    const id = packet.messageId
    if (typeof id !== 'number') return undefined
    // 5.0: reason code 0 and no properties may both be left out [MQTT-3.4.2-1].
    if (version === 5 && ((packet.reasonCode ?? 0) !== 0 || packet.properties !== undefined)) return undefined
    const bytes = Buffer.allocUnsafe(4)
    bytes[0] = 0x40
    bytes[1] = 2
    bytes.writeUInt16BE(id, 2)
    return bytes
  }
  if (packet.cmd !== 'publish') return undefined
  const { topic, qos = 0 } = packet
  const payload = packet.payload || EMPTY
  if (typeof topic !== 'string' || typeof payload === 'string') return undefined
  if (version === 5 && packet.properties !== undefined && hasKeys(packet.properties)) return undefined
  if (qos > 0 && typeof packet.messageId !== 'number') return undefined
  const topicLength = Buffer.byteLength(topic)
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + (version === 5 ? 1 : 0) + payload.length
  if (remaining > GATHER_LIMIT || topicLength > 0xffff) return undefined
  const bytes = Buffer.allocUnsafe(1 + varIntSize(remaining) + remaining)
  bytes[0] = 0x30 | (packet.dup ? 0x08 : 0) | ((qos & 3) << 1) | (packet.retain ? 1 : 0)
  let offset = writeVarInt(bytes, 1, remaining)
  bytes.writeUInt16BE(topicLength, offset)
  offset += 2
  offset += bytes.write(topic, offset, topicLength === topic.length ? 'latin1' : 'utf8')
  if (qos > 0) offset = bytes.writeUInt16BE(packet.messageId!, offset)
  if (version === 5) bytes[offset++] = 0 // property length [MQTT-3.3.2.3.1]
  payload.copy(bytes, offset)
  return bytes
}

function writeVarInt(bytes: Buffer, offset: number, value: number): number {
  do {
    let byte = value % 128
    value = Math.floor(value / 128)
    if (value > 0) byte |= 0x80
    bytes[offset++] = byte
  } while (value > 0)
  return offset
}

type ParserState = ParserInternals

/*
 * The parser aedes reads with, for the hot path: complete PUBLISH packets (without 5.0 properties)
 * and PUBACK packets at the start of a read are decoded here, straight from the socket's buffer,
 * and emitted to the same listeners mqtt-packet's parser would emit them to, in order. Everything
 * else — another packet type, a packet split across reads, a malformed or oversized packet, a 5.0
 * PUBLISH with properties — and everything after it in the read goes to mqtt-packet, which keeps
 * every check and error it has. The lean path runs only while mqtt-packet holds no partial packet.
 */
let mqttParse: (this: ParserState, buf: Buffer) => number

/** Takes decoded PUBLISH packets instead of aedes' handler (mqtt/fast-publish.ts), when it accepts them. */
export interface PublishHandler {
  accepts(client: Client, packet: Packet & { cmd: 'publish' }): boolean
  take(client: Client, packet: Packet & { cmd: 'publish' }): void
}

let publishHandler: PublishHandler | undefined
/*
 * The PUBLISH the handler is taking, while the inbound taps see it. Neither a WeakSet of packets
 * nor a mark on them: every entry of a weak collection whose key is a young object is work for each
 * young-generation collection (one entry per message took the latency bench's scavenges from
 * ≈ 0.6 to 1.5–2.4 ms), and a property added to a packet gives it a second hidden class everywhere
 * packets go. The handler's PUBACKs carry `fleetmqFast` from their class (mqtt/fast-publish.ts).
 */
let inboundFast: object | undefined

/** Installs the handler; returns the function that removes it. */
export function setPublishHandler(handler: PublishHandler): () => void {
  publishHandler = handler
  return () => {
    if (publishHandler === handler) publishHandler = undefined
  }
}

/**
 * The packet goes through the publish handler, not aedes' own: the PUBLISH it is taking (asked by
 * an inbound tap), or a PUBACK it wrote. Their PUBACK follows the publish already (mqtt/puback-order.ts).
 */
export const handledFast = (packet: object): boolean => packet === inboundFast || (packet as { fleetmqFast?: boolean }).fleetmqFast === true

function leanParse(this: ParserState, buf: Buffer): number {
  if (this._stateCounter !== 0 || this._list.length !== 0 || this.error !== null || this.client === undefined) return mqttParse.call(this, buf)
  const version = this.settings.protocolVersion ?? 4
  const maximum = brokerInternals(internals(this.client).broker).maximumPacketSize ?? 0
  let pos = 0
  while (pos < buf.length) {
    const first = buf[pos]
    const type = first >> 4
    if (type !== 3 && first !== 0x40) break
    let remaining = 0
    let multiplier = 1
    let cursor = pos + 1
    let complete = false
    while (cursor < buf.length && cursor <= pos + 4) {
      const byte = buf[cursor++]
      remaining += (byte & 0x7f) * multiplier
      multiplier *= 128
      if ((byte & 0x80) === 0) {
        complete = true
        break
      }
    }
    const end = cursor + remaining
    if (!complete || end > buf.length || (maximum > 0 && end - pos > maximum)) break
    const packet = new MqttPacketClass()
    if (type === 4) {
      if (remaining !== 2) break
      packet.cmd = 'puback'
      packet.length = 2
      packet.messageId = buf.readUInt16BE(cursor)
      if (version === 5) packet.reasonCode = 0 // absent reason code: Success [MQTT-3.4.2.1]
    } else {
      const qos = (first >> 1) & 3
      if (qos === 3) break
      const topicLength = remaining >= 2 ? buf.readUInt16BE(cursor) : -1
      let at = cursor + 2 + topicLength
      if (topicLength < 0 || at + (qos > 0 ? 2 : 0) + (version === 5 ? 1 : 0) > end) break
      // A 5.0 PUBLISH with properties is mqtt-packet's: only a zero property length is read here.
      if (version === 5 && buf[at + (qos > 0 ? 2 : 0)] !== 0) break
      packet.cmd = 'publish'
      packet.retain = (first & 1) !== 0
      packet.qos = qos
      packet.dup = (first & 0x08) !== 0
      packet.length = remaining
      packet.topic = buf.toString('utf8', cursor + 2, at)
      if (qos > 0) {
        packet.messageId = buf.readUInt16BE(at)
        at += 2
      }
      if (version === 5) at++
      packet.payload = buf.subarray(at, end)
    }
    pos = end
    const client = this.client
    const publish = packet as unknown as Packet & { cmd: 'publish' }
    if (type === 3 && publishHandler !== undefined && publishHandler.accepts(client, publish)) {
      // The inbound taps see it as they see every packet, then the handler takes it instead of aedes.
      inboundFast = packet
      onParsedPacket.call(this, packet)
      inboundFast = undefined
      if (!client.closed) publishHandler.take(client, publish)
    } else {
      this.emit('packet', packet)
    }
    // A listener may have ended the connection or made the parser fail: leave the rest to it.
    if (this.error !== null) return 0
  }
  if (pos === buf.length) return 0
  return mqttParse.call(this, pos === 0 ? buf : buf.subarray(pos))
}

/**
 * Runs the outbound taps from `position` on, then writes. A tap may write later, from another
 * turn (flow control releases a queued PUBLISH when an acknowledgement frees the window): the
 * write is coalesced there too, or every released packet was a write(2) of its own — 11 % of the
 * subscriber node's CPU with a backlog (issue 16, `--cpu-prof`: `writeBuffer` under flow-control
 * `flush`).
 */
function runOutbound(taps: readonly OutboundTap[], position: number, client: Client, packet: Packet, stream: ClientStream, opts: object | undefined): boolean {
  if (position === taps.length) {
    coalesce(stream)
    return writePacket(packet, stream, opts)
  }
  return taps[position](client, packet, (next) => runOutbound(taps, position + 1, client, next, stream, opts))
}

/*
 * [MQTT-3.2.0-1] "The first packet sent to the Client from the Server MUST be CONNACK" (5.0: or
 * AUTH). aedes restores a resumed session's subscriptions before it writes the CONNACK
 * (handlers/connect.js restoreSubs, then storeWill's Redis round trips, then doConnack), and a
 * message routed to the client meanwhile was written at once, ahead of the CONNACK. MQTT.js then
 * keeps that PUBLISH until its PUBACK is sent, queues the PUBACK until it is connected, and reads
 * the CONNACK only after the PUBLISH: no CONNACK within its connectTimeout, attempt after attempt
 * while messages flow (a subscriber took 4–23 s to come back on a surviving node). Whatever is
 * written before the CONNACK waits here, in order, and follows it in the same write; a connection
 * refused with its CONNACK closes, and what waited goes with it (a QoS 1/2 message stays in the
 * session's store).
 */
const BEFORE_CONNACK = Symbol('fleetmq.beforeConnack')
interface HeldPacket { readonly packet: Packet; readonly opts: object | undefined }
/** Packets held until the CONNACK, or `true` once it is written. */
type OrderedStream = ClientStream & { [BEFORE_CONNACK]?: HeldPacket[] | true }

function connackFirst(client: Client, packet: Packet, stream: OrderedStream, opts: object | undefined): boolean {
  const held = stream[BEFORE_CONNACK]
  if (held === true || packet.cmd === 'auth') return tapAndWrite(client, packet, stream, opts)
  if (packet.cmd !== 'connack') {
    if (held === undefined) stream[BEFORE_CONNACK] = [{ packet, opts }]
    else held.push({ packet, opts })
    return true
  }
  stream[BEFORE_CONNACK] = true
  let result = tapAndWrite(client, packet, stream, opts)
  if (held !== undefined) for (const waiting of held) result = tapAndWrite(client, waiting.packet, stream, waiting.opts) && result
  return result
}

function tapAndWrite(client: Client, packet: Packet, stream: ClientStream, opts: object | undefined): boolean {
  coalesce(stream)
  const entry = outboundByCmd.get(packet.cmd)
  const taps = entry === undefined ? undefined : client.version === 5 ? entry.mqtt5 : entry.any
  if (taps === undefined || taps.length === 0) return writePacket(packet, stream, opts)
  return runOutbound(taps, 0, client, packet, stream, opts)
}

/** The parser's 'packet' listener: one function for every connection (`this` is the parser). */
function onParsedPacket(this: { client?: Client; settings: { protocolVersion?: number } }, packet: Packet): void {
  const client = this.client
  if (client === undefined) return
  const entry = inboundByCmd.get(packet.cmd)
  if (entry === undefined) return
  // Packets that came with the CONNECT are parsed before aedes sets `version`; the parser took the
  // CONNECT's as its settings.
  const mqtt5 = client.version === 5 || (client.version === null && this.settings.protocolVersion === 5)
  const taps = mqtt5 ? entry.mqtt5 : entry.any
  for (let i = 0; i < taps.length; i++) taps[i](client, packet)
}

function install(): void {
  if (installed) return
  installed = true
  const { original } = replaceCodec((parser) => {
    // The parser's byte queue is a `bl` BufferListStream: a whole Duplex (two stream states) per
    // connection, of which the parser uses only the list. The plain BufferList has the same
    // methods; the parser makes a new stream only after a parse error, which ends the connection.
    parser._list = new BufferList() as ParserInternals['_list']
    // Registered before aedes adds its own 'packet' listener, so taps run first.
    parser.on('packet', onParsedPacket)
    mqttParse ??= parser.parse
    parser.parse = leanParse
  }, (write) => function tappedWrite(packet, stream: ClientStream, opts) {
    const client = stream.client
    if (client === undefined) return write(packet, stream, opts)
    return connackFirst(client, packet, stream as OrderedStream, opts)
  })
  originalWrite = original.writeToStream
  // mqtt-packet builds its table of packet-id buffers (65,536 small Buffers, ≈ 6 MiB) on its first
  // write: at start-up rather than with the first client, so that it is never mistaken for (or
  // paid by) a connection.
  writePacket({ cmd: 'pingresp' }, { write: () => true } as unknown as ClientStream, undefined)
}

/** Adds a tap for the packets `filter` names; returns the function that removes it. */
export function tapInbound(filter: TapFilter, tap: InboundTap): () => void {
  install()
  const entry = { tap, filter }
  inboundTaps.push(entry)
  inboundByCmd = index(inboundTaps)
  return () => {
    inboundTaps.splice(inboundTaps.indexOf(entry), 1)
    inboundByCmd = index(inboundTaps)
  }
}

/**
 * Adds a tap for the packets `filter` names; returns the function that removes it. Taps run in
 * the order they were added.
 */
export function tapOutbound(filter: TapFilter, tap: OutboundTap): () => void {
  install()
  const entry = { tap, filter }
  outboundTaps.push(entry)
  outboundByCmd = index(outboundTaps)
  return () => {
    outboundTaps.splice(outboundTaps.indexOf(entry), 1)
    outboundByCmd = index(outboundTaps)
  }
}

const EMPTY = Buffer.alloc(0)
const varIntSize = (n: number): number => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4)

/** Bytes the packet takes on the wire for this protocol version, without copying its payload. */
export function wireSize(packet: Packet, protocolVersion: number): number {
  if (packet.cmd !== 'publish') return mqttPacket.generate(packet, { protocolVersion }).length
  const payloadLength = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length
  const head = mqttPacket.generate({ ...packet, payload: EMPTY }, { protocolVersion }).length
  let remaining = head - 2
  for (let lengthBytes = 1; lengthBytes <= 4; lengthBytes++) {
    remaining = head - 1 - lengthBytes
    if (varIntSize(remaining) === lengthBytes) break
  }
  const total = remaining + payloadLength
  return 1 + varIntSize(total) + total
}
