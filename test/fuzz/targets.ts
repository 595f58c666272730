import { createHash } from 'node:crypto'
import { Rng, mutateBytes, words, type MutationContext } from './mutate.js'
import { encode, framePacket, packetBody, randomPacket, randomSession, splitPackets, connectPacket, type Version } from './mqtt-packets.js'

/*
 * The four network parsers of a node, each as a fuzz target: what its inputs look like (seeds built
 * the way the test suite builds its packets and requests), how to mutate them with their structure
 * in mind, and which listener of the broker under test receives the bytes. An input is the whole
 * byte stream of one connection, sent and half-closed.
 */

export type TargetName = 'mqtt' | 'proxy' | 'ws' | 'mgmt'

export interface BrokerPorts {
  /** Plain MQTT, proxyProtocol off. */
  readonly mqtt: number
  /** Plain MQTT, proxyProtocol optional. */
  readonly proxy: number
  /** MQTT over WebSocket at /mqtt. */
  readonly ws: number
  /** The management HTTP API. */
  readonly mgmt: number
}

export interface Target {
  readonly name: TargetName
  readonly port: (ports: BrokerPorts) => number
  readonly dictionary: readonly Buffer[]
  /** Longest input worth sending, bytes. */
  readonly maxLength: number
  seeds(rng: Rng): Buffer[]
  mutate(input: Buffer, rng: Rng, ctx: MutationContext): Buffer
  /** False for an input the harness must not send. */
  sendable(input: Buffer): boolean
}

const always = (): boolean => true

// ---------------------------------------------------------------------------------------------
// MQTT

const MQTT_DICTIONARY = [
  ...words('MQTT', 'MQIsdp', '$share/', '$SYS/', '#', '+', '/'),
  // Protocol levels, CONNECT flags, and property identifiers with a plausible first value byte [MQTT-2.2.2.2].
  ...[3, 4, 5, 0x84, 0xc2, 0x02, 0x04, 0x06, 0x0e, 0x26].map((b) => Buffer.from([b])),
  ...[0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1c, 0x1f, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a]
    .map((id) => Buffer.from([id, 0x00, 0x01])),
  // Variable Byte Integer edges [MQTT-1.5.5].
  Buffer.from([0xff, 0xff, 0xff, 0x7f]), Buffer.from([0x80, 0x80, 0x80, 0x80, 0x01]), Buffer.from([0x80, 0x01]),
  // Malformed UTF-8 and U+0000 in strings [MQTT-1.5.4-1] [MQTT-1.5.4-2].
  Buffer.from([0xc0, 0x80]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0x00]),
]

/** Mutates one packet of a stream and fixes its Remaining Length, or works on the whole stream. */
function mutateMqttStream(input: Buffer, rng: Rng, ctx: MutationContext, version: () => Version): Buffer {
  const packets = splitPackets(input)
  const choice = rng.below(10)
  if (packets.length > 0 && choice < 6) {
    const i = rng.below(packets.length)
    const body = packetBody(packets[i])
    if (body !== undefined) {
      // Flags and type in the first byte, or the body with a Remaining Length that matches it.
      const first = rng.chance(0.15) ? (packets[i][0] ^ (1 << rng.below(8))) & 0xff : packets[i][0]
      packets[i] = framePacket(first, rng.chance(0.85) ? mutateBytes(body, rng, ctx) : body)
    }
    return Buffer.concat(packets).subarray(0, ctx.maxLength)
  }
  if (choice < 8) {
    // Packet-level: insert a new packet, drop, duplicate or reorder one.
    const i = rng.below(packets.length + 1)
    switch (rng.below(4)) {
      case 0: {
        const packet = encode(randomPacket(version(), rng), version())
        if (packet) packets.splice(i, 0, packet)
        break
      }
      case 1: packets.splice(i, 1); break
      case 2: if (packets[i]) packets.splice(i, 0, packets[i]); break
      default: if (packets.length > 1) packets.push(...packets.splice(i, 1))
    }
    return Buffer.concat(packets).subarray(0, ctx.maxLength)
  }
  return mutateBytes(input, rng, ctx)
}

/** The protocol level a stream's CONNECT asks for (byte 2 of its variable header), 4 by default. */
function streamVersion(input: Buffer): Version {
  const body = packetBody(input)
  if (body === undefined || body.length < 2) return 4
  const level = body[2 + body.readUInt16BE(0)]
  return level === 3 || level === 5 ? level : 4
}

function mqttSeeds(rng: Rng): Buffer[] {
  const seeds: Buffer[] = []
  for (const version of [3, 4, 5] as const) {
    // Every packet type after a CONNECT, one seed each, so that each field parser starts covered.
    for (let i = 0; i < 24; i++) seeds.push(randomSession(rng, version))
    const connect = encode(connectPacket(version, rng), version)
    if (connect) seeds.push(connect)
  }
  return seeds
}

const mqtt: Target = {
  name: 'mqtt',
  port: (p) => p.mqtt,
  dictionary: MQTT_DICTIONARY,
  maxLength: 4096,
  seeds: mqttSeeds,
  mutate: (input, rng, ctx) => mutateMqttStream(input, rng, ctx, () => streamVersion(input)),
  sendable: always,
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol v1/v2 in front of MQTT

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

function proxyV2(command: number, family: number, block: Buffer): Buffer {
  const head = Buffer.alloc(16)
  V2_SIGNATURE.copy(head)
  head[12] = 0x20 | command
  head[13] = family
  head.writeUInt16BE(block.length, 14)
  return Buffer.concat([head, block])
}

const ipv4Block = (tlvs = Buffer.alloc(0)): Buffer => Buffer.concat([Buffer.from([203, 0, 113, 7, 10, 0, 0, 1, 0xc3, 0x50, 0x07, 0x5b]), tlvs])
const ipv6Block = (): Buffer => Buffer.concat([Buffer.from('20010db8000000000000000000000001', 'hex'), Buffer.alloc(16), Buffer.from([0xc3, 0x50, 0x07, 0x5b])])
/** An AWS VPC endpoint TLV (type 0xEA) and an HAProxy SSL TLV (0x20), as load balancers send them [proxy-protocol 2.2.7]. */
const TLVS = Buffer.from([0xea, 0x00, 0x05, 0x01, 0x76, 0x70, 0x63, 0x65, 0x20, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00])

const PROXY_DICTIONARY = [
  ...words('PROXY ', 'TCP4 ', 'TCP6 ', 'UNKNOWN', ' ', '\r\n', '127.0.0.1', '::1', '::ffff:1.2.3.4', '65535', '65536', '0', '00', '255.255.255.255', '1.2.3', 'fe80::1%eth0'),
  V2_SIGNATURE, Buffer.from([0x21]), Buffer.from([0x20]), Buffer.from([0x11]), Buffer.from([0x21, 0x11]), Buffer.from([0x22, 0x31]), Buffer.from([0x10, 0x00]), Buffer.from([0xff, 0xff]),
]

function proxySeeds(rng: Rng): Buffer[] {
  const after = (): Buffer => randomSession(rng, rng.pick([4, 5] as const))
  return [
    Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 50000 1883\r\n'), after()]),
    Buffer.concat([Buffer.from('PROXY TCP6 2001:db8::1 ::1 50000 1883\r\n'), after()]),
    Buffer.concat([Buffer.from('PROXY UNKNOWN\r\n'), after()]),
    Buffer.concat([proxyV2(1, 0x11, ipv4Block()), after()]),
    Buffer.concat([proxyV2(1, 0x11, ipv4Block(TLVS)), after()]),
    Buffer.concat([proxyV2(1, 0x21, ipv6Block()), after()]),
    Buffer.concat([proxyV2(1, 0x31, Buffer.alloc(216)), after()]),
    Buffer.concat([proxyV2(0, 0x00, Buffer.alloc(0)), after()]),
    proxyV2(0, 0x00, Buffer.alloc(0)),
    after(),
  ]
}

/** The length of the PROXY header at the start, as far as it can be told, or 0. */
function proxyHeaderLength(input: Buffer): number {
  if (input.subarray(0, 12).equals(V2_SIGNATURE) && input.length >= 16) return Math.min(input.length, 16 + input.readUInt16BE(14))
  if (input.subarray(0, 6).toString('latin1') === 'PROXY ') {
    const end = input.indexOf('\r\n')
    return end < 0 ? input.length : end + 2
  }
  return 0
}

const proxy: Target = {
  name: 'proxy',
  port: (p) => p.proxy,
  dictionary: PROXY_DICTIONARY,
  maxLength: 4096 + 512,
  seeds: proxySeeds,
  mutate(input, rng, ctx) {
    const length = proxyHeaderLength(input)
    const header = input.subarray(0, length)
    const rest = input.subarray(length)
    switch (rng.below(4)) {
      case 0: return Buffer.concat([header, mutateMqttStream(rest, rng, ctx, () => streamVersion(rest))])
      case 1: {
        // The v2 header with its length field fixed to the mutated block, so the block parser runs.
        if (length >= 16 && header.subarray(0, 12).equals(V2_SIGNATURE)) {
          const fixed = Buffer.from(header.subarray(0, 16))
          fixed[12] = rng.chance(0.2) ? rng.below(256) : fixed[12]
          fixed[13] = rng.chance(0.3) ? rng.pick([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, rng.below(256)]) : fixed[13]
          const block = mutateBytes(header.subarray(16), rng, { ...ctx, maxLength: 300 })
          fixed.writeUInt16BE(block.length, 14)
          return Buffer.concat([fixed, block, rest])
        }
        return Buffer.concat([mutateBytes(header, rng, { ...ctx, maxLength: 200 }), rest])
      }
      default: return mutateBytes(input, rng, ctx)
    }
  },
  sendable: always,
}

// ---------------------------------------------------------------------------------------------
// WebSocket: the HTTP upgrade, then frames [RFC 6455 4.1, 5.2]

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='

function upgradeRequest(path: string, extra = ''): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n${extra}\r\n`, 'latin1')
}

/** A client frame: FIN/RSV/opcode, MASK set with a key, the three length encodings. */
function frame(opcode: number, payload: Buffer, options: { fin?: boolean; rsv?: number; mask?: boolean; lengthForm?: 7 | 16 | 64 } = {}): Buffer {
  const { fin = true, rsv = 0, mask = true } = options
  const form = options.lengthForm ?? (payload.length < 126 ? 7 : payload.length < 65_536 ? 16 : 64)
  const head: number[] = [(fin ? 0x80 : 0) | (rsv << 4) | (opcode & 0x0f)]
  const maskBit = mask ? 0x80 : 0
  if (form === 7) head.push(maskBit | Math.min(payload.length, 125))
  else if (form === 16) head.push(maskBit | 126, payload.length >> 8, payload.length & 0xff)
  else head.push(maskBit | 127, 0, 0, 0, 0, (payload.length >>> 24) & 0xff, (payload.length >> 16) & 0xff, (payload.length >> 8) & 0xff, payload.length & 0xff)
  if (!mask) return Buffer.concat([Buffer.from(head), payload])
  const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d])
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i % 4]))
  return Buffer.concat([Buffer.from(head), key, masked])
}

/** Splits after the HTTP head; frames parsed leniently. */
function splitFrames(bytes: Buffer): { opcode: number; flags: number; payload: Buffer }[] | undefined {
  const frames: { opcode: number; flags: number; payload: Buffer }[] = []
  let pos = 0
  while (pos + 2 <= bytes.length) {
    const flags = bytes[pos] & 0xf0
    const opcode = bytes[pos] & 0x0f
    const masked = (bytes[pos + 1] & 0x80) !== 0
    let length = bytes[pos + 1] & 0x7f
    let cursor = pos + 2
    if (length === 126) {
      if (cursor + 2 > bytes.length) return undefined
      length = bytes.readUInt16BE(cursor)
      cursor += 2
    } else if (length === 127) {
      if (cursor + 8 > bytes.length) return undefined
      length = bytes.readUInt32BE(cursor + 4)
      cursor += 8
    }
    const key = masked ? bytes.subarray(cursor, cursor + 4) : undefined
    if (masked) cursor += 4
    if (cursor + length > bytes.length) return undefined
    const payload = Buffer.from(bytes.subarray(cursor, cursor + length))
    if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i % 4]
    frames.push({ opcode, flags, payload })
    pos = cursor + length
  }
  return pos === bytes.length ? frames : undefined
}

const WS_DICTIONARY = [
  ...words('GET ', 'POST ', ' HTTP/1.1\r\n', ' HTTP/1.0\r\n', '\r\n', '/mqtt', '//', '/..', '%2e', '%', '?', '#', '@', '[', ']', ':', '\\', 'http://', '*',
    'Upgrade: websocket\r\n', 'Connection: Upgrade\r\n', 'Sec-WebSocket-Version: 8\r\n', 'Sec-WebSocket-Protocol: mqttv3.1\r\n', 'Sec-WebSocket-Protocol: \r\n',
    'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n', 'Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n', 'Host: \r\n', 'Expect: 100-continue\r\n'),
  Buffer.from([0x82]), Buffer.from([0x81]), Buffer.from([0x88]), Buffer.from([0x89]), Buffer.from([0x80]), Buffer.from([0x02]), Buffer.from([0xfe]), Buffer.from([0xff]),
]

function wsSeeds(rng: Rng): Buffer[] {
  const session = (version: Version): Buffer[] => splitPackets(randomSession(rng, version))
  const binary = (packets: Buffer[]): Buffer => Buffer.concat(packets.map((p) => frame(0x2, p)))
  return [
    Buffer.concat([upgradeRequest('/mqtt'), binary(session(4))]),
    Buffer.concat([upgradeRequest('/mqtt'), binary(session(5))]),
    Buffer.concat([upgradeRequest('/mqtt?x=1'), binary(session(3))]),
    // Several packets in one frame [MQTT-6.0.0-2], a packet split over two, a continuation frame.
    Buffer.concat([upgradeRequest('/mqtt'), frame(0x2, randomSession(rng, 5))]),
    (() => {
      const bytes = randomSession(rng, 4)
      const half = bytes.length >> 1
      return Buffer.concat([upgradeRequest('/mqtt'), frame(0x2, bytes.subarray(0, half), { fin: false }), frame(0x0, bytes.subarray(half))])
    })(),
    Buffer.concat([upgradeRequest('/mqtt'), frame(0x1, Buffer.from('text')), frame(0x9, Buffer.from('ping')), frame(0x8, Buffer.from([0x03, 0xe8]))]),
    Buffer.concat([upgradeRequest('/mqtt', 'Sec-WebSocket-Extensions: permessage-deflate\r\n'), binary(session(4))]),
    Buffer.concat([upgradeRequest('/mqtt'), frame(0x2, randomSession(rng, 4), { lengthForm: 64 })]),
    upgradeRequest('/other'),
    Buffer.from('GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'),
    Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /mqtt?a HTTP/1.1\r\n\r\n'),
    Buffer.from('POST /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nbody'),
  ]
}

function mutateWs(input: Buffer, rng: Rng, ctx: MutationContext): Buffer {
  const split = input.indexOf('\r\n\r\n')
  const head = split < 0 ? input : input.subarray(0, split + 4)
  const rest = split < 0 ? Buffer.alloc(0) : input.subarray(split + 4)
  const frames = rest.length > 0 ? splitFrames(rest) : undefined
  const choice = rng.below(10)
  if (choice < 3) return Buffer.concat([mutateHttpHead(head, rng, ctx), rest])
  if (choice < 7 && frames && frames.length > 0) {
    // One frame changed (header bits, opcode, its MQTT payload, or the length form) and re-encoded.
    const i = rng.below(frames.length)
    const f = frames[i]
    const payload = rng.chance(0.6) ? mutateMqttStream(f.payload, rng, ctx, () => 4) : f.payload
    const flags = rng.chance(0.2) ? rng.below(16) << 4 : f.flags
    const opcode = rng.chance(0.2) ? rng.below(16) : f.opcode
    const rebuilt = frames.map((g, j) => j === i
      ? frame(opcode, payload, { fin: (flags & 0x80) !== 0, rsv: (flags >> 4) & 0x7, mask: rng.chance(0.95), lengthForm: rng.pick([undefined, undefined, 16, 64] as const) })
      : frame(g.opcode, g.payload, { fin: (g.flags & 0x80) !== 0, rsv: (g.flags >> 4) & 0x7 }))
    if (rng.chance(0.1)) rebuilt.push(frame(rng.pick([0x0, 0x1, 0x2, 0x8, 0x9, 0xa]), encode(randomPacket(4, rng), 4) ?? Buffer.alloc(0)))
    return Buffer.concat([head, ...rebuilt]).subarray(0, ctx.maxLength)
  }
  return mutateBytes(input, rng, ctx)
}

const ws: Target = {
  name: 'ws',
  port: (p) => p.ws,
  dictionary: WS_DICTIONARY,
  maxLength: 8192,
  seeds: wsSeeds,
  mutate: mutateWs,
  sendable: always,
}

// ---------------------------------------------------------------------------------------------
// HTTP heads (request line and header lines), shared by the WebSocket handshake and the management API

const REQUEST_TARGETS = ['/', '/mqtt', '//', '/%', '/%zz', '/..%2f', '/a/../mqtt', 'http://x/mqtt', 'http://[::1]:0/', '*', '/?#', '/\\', '/%00', '/' + 'a'.repeat(300), '/healthz', '/readyz', '/metrics', '/api/v1/whoami', '/api/v1/cluster/status', '/api/v1/cluster/descriptor', '/openapi.json', '/api/v1/openapi.json', '/api/v1/clients', '/api/v1/clients/a%2Fb', '/api/v1/retained?topic=%23', '/api/v1/nodes?page=2&limit=1']

function mutateHttpHead(head: Buffer, rng: Rng, ctx: MutationContext): Buffer {
  const text = head.toString('latin1')
  const lines = text.split('\r\n')
  const choice = rng.below(6)
  if (choice === 0 && lines.length > 0) {
    // The request target, replaced or extended: URL parsing sits behind it.
    const [method = 'GET', target = '/', version = 'HTTP/1.1'] = lines[0].split(' ')
    const next = rng.chance(0.5) ? rng.pick(REQUEST_TARGETS) : target + rng.pick(REQUEST_TARGETS)
    lines[0] = [rng.chance(0.1) ? rng.pick(['POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'CONNECT', 'get']) : method, next, version].join(' ')
    return Buffer.from(lines.join('\r\n'), 'latin1')
  }
  if (choice === 1 && lines.length > 2) {
    // A header line dropped or repeated.
    const i = 1 + rng.below(lines.length - 2)
    if (rng.chance(0.5)) lines.splice(i, 1)
    else lines.splice(i, 0, lines[i])
    return Buffer.from(lines.join('\r\n'), 'latin1')
  }
  return mutateBytes(head, rng, { ...ctx, maxLength: 2048 })
}

// ---------------------------------------------------------------------------------------------
// The management API

const MGMT_DICTIONARY = [
  ...words('GET ', 'POST ', 'PUT ', 'DELETE ', ' HTTP/1.1\r\n', '\r\n', '/healthz', '/readyz', '/metrics', '/api/v1/', '/api/v1/whoami', '/api/v1/cluster/status',
    '/api/v1/cluster/descriptor', '//', '[', '%', '?', '#', '..', '\\', 'Authorization: Basic YWRtaW46eA==\r\n', 'Authorization: Bearer x\r\n', 'Authorization: Basic \r\n',
    'Authorization: Basic !!!\r\n', 'Content-Length: 2\r\n', 'Content-Length: -1\r\n', 'Transfer-Encoding: chunked\r\n', '0\r\n\r\n', 'Connection: keep-alive\r\n', '{}', '{"seed":'),
]

function mgmtRequest(method: string, path: string, headers = '', body = ''): Buffer {
  const length = body === '' ? '' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`
  return Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${length}${headers}\r\n${body}`, 'latin1')
}

function mgmtSeeds(): Buffer[] {
  return [
    mgmtRequest('GET', '/healthz'),
    mgmtRequest('GET', '/readyz'),
    mgmtRequest('GET', '/metrics'),
    mgmtRequest('GET', '/api/v1/whoami', 'Authorization: Basic YWRtaW46c2VjcmV0\r\n'),
    mgmtRequest('GET', '/api/v1/cluster/status'),
    mgmtRequest('GET', '/api/v1/cluster/descriptor', 'Authorization: Bearer not-the-secret\r\n'),
    mgmtRequest('POST', '/healthz', '', '{"a":1}'),
    mgmtRequest('DELETE', '/metrics'),
    mgmtRequest('GET', '/nowhere?x=1'),
    Buffer.concat([mgmtRequest('GET', '/healthz', 'Connection: keep-alive\r\n'), mgmtRequest('GET', '/readyz')]),
    Buffer.from('POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n'),
  ]
}

/*
 * Never sent: a request that could reach the cluster's join or leave routes. On this node a request
 * from loopback may call them without credentials, and join makes the node contact the seed the body
 * names — a fuzzed body could name any host. Tabs and line breaks are dropped before the check because
 * the URL parser removes them from a path; dot segments and %2e resolve to the same route, so the
 * check looks for the words anywhere in the request.
 */
function mgmtSendable(input: Buffer): boolean {
  const text = input.toString('latin1').replace(/[\t\r\n]/g, '').toLowerCase()
  // Nor a ban or an ACL change (management API v1): one could refuse the client that checks, after
  // each target, that the node still serves MQTT, and look like a finding.
  return !text.includes('join') && !text.includes('leave') && !text.includes('banned') && !text.includes('acl')
}

const mgmt: Target = {
  name: 'mgmt',
  port: (p) => p.mgmt,
  dictionary: MGMT_DICTIONARY,
  maxLength: 4096,
  seeds: mgmtSeeds,
  mutate(input, rng, ctx) {
    const split = input.indexOf('\r\n\r\n')
    if (split >= 0 && rng.chance(0.5)) return Buffer.concat([mutateHttpHead(input.subarray(0, split + 4), rng, ctx), input.subarray(split + 4)])
    return mutateBytes(input, rng, ctx)
  },
  sendable: mgmtSendable,
}

export const TARGETS: readonly Target[] = [mqtt, proxy, ws, mgmt]

/** A stable name for an input file: its content hash. */
export const inputName = (input: Buffer): string => createHash('sha256').update(input).digest('hex').slice(0, 16)
