import net from 'node:net'
import type { ListenerConfig } from '../config/schema.js'

/*
 * PROXY protocol v1 (text) and v2 (binary), as HAProxy specifies it
 * (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt). A load balancer that terminates
 * TCP or TLS writes one header at the very start of the connection, before any client byte, to
 * tell the broker who the real client is. The decoder works on the first bytes of a stream and is
 * incremental: it answers `incomplete` until the whole header is there, because a header may arrive
 * split across TCP segments.
 */

export type ProxyProtocolMode = ListenerConfig['proxyProtocol']

/** "PROXY " followed by the protocol family. [proxy-protocol 2.1] */
const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1')
/** The 12-byte v2 signature, chosen so that it cannot start a valid HTTP, TLS or SSH stream. [proxy-protocol 2.2] */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
/** Signature, version/command, family/transport and the 2-byte length. [proxy-protocol 2.2] */
const V2_FIXED_LENGTH = 16
/** "the maximum line lengths the receiver must support including the CRLF are 107 bytes" [proxy-protocol 2.1] */
export const V1_MAX_LENGTH = 107
/**
 * Longest v2 header accepted, bytes. The address block is at most 216 bytes (UNIX); the rest is
 * TLVs (AWS adds a VPC endpoint id, HAProxy TLS details), a few dozen bytes in practice. The wire
 * format allows 64 KiB, which we refuse to buffer for a connection that has not said who it is.
 */
export const V2_MAX_LENGTH = V2_FIXED_LENGTH + 4_096

export interface ProxyAddress {
  readonly address: string
  readonly port: number
}

export interface ProxyHeader {
  readonly version: 1 | 2
  /**
   * `local`: the proxy opened the connection on its own behalf (v2 LOCAL, a load balancer health
   * check), or the header carries no usable address (v1 UNKNOWN, v2 UNSPEC/UNIX). The receiver
   * keeps the connection's own endpoints. [proxy-protocol 2.1, 2.2]
   */
  readonly command: 'proxy' | 'local'
  /** The real client, when the header carries TCP over IPv4 or IPv6. */
  readonly source?: ProxyAddress
  readonly destination?: ProxyAddress
}

export type ProxyDecodeResult =
  /** More bytes are needed to decide. */
  | { readonly status: 'incomplete' }
  /** The stream does not start with a PROXY signature. */
  | { readonly status: 'absent' }
  | { readonly status: 'malformed'; readonly version: 1 | 2; readonly reason: string }
  /** `length` bytes at the start of the buffer are the header; the client's bytes follow. */
  | { readonly status: 'decoded'; readonly header: ProxyHeader; readonly length: number }

/** Which PROXY version the bytes start with, `incomplete` while they match a signature's prefix. */
export function detectProxySignature(buf: Buffer): 'v1' | 'v2' | 'absent' | 'incomplete' {
  for (const [signature, version] of [[V1_SIGNATURE, 'v1'], [V2_SIGNATURE, 'v2']] as const) {
    const compared = Math.min(buf.length, signature.length)
    if (buf.subarray(0, compared).equals(signature.subarray(0, compared))) {
      return compared === signature.length ? version : 'incomplete'
    }
  }
  return 'absent'
}

export function decodeProxyHeader(buf: Buffer): ProxyDecodeResult {
  switch (detectProxySignature(buf)) {
    case 'incomplete':
      return { status: 'incomplete' }
    case 'absent':
      return { status: 'absent' }
    case 'v1':
      return decodeV1(buf)
    case 'v2':
      return decodeV2(buf)
  }
}

const V1_PORT = /^(0|[1-9][0-9]{0,4})$/

function decodeV1(buf: Buffer): ProxyDecodeResult {
  const malformed = (reason: string): ProxyDecodeResult => ({ status: 'malformed', version: 1, reason })
  const end = buf.subarray(0, V1_MAX_LENGTH).indexOf('\r\n')
  if (end < 0) {
    return buf.length >= V1_MAX_LENGTH ? malformed(`v1 header has no CRLF within ${V1_MAX_LENGTH} bytes`) : { status: 'incomplete' }
  }
  const line = buf.subarray(0, end).toString('latin1')
  const length = end + 2
  const fields = line.split(' ')
  const family = fields[1]
  // "UNKNOWN": the proxy cannot tell; the receiver ignores the rest of the line. [proxy-protocol 2.1]
  if (family === 'UNKNOWN') return { status: 'decoded', length, header: { version: 1, command: 'local' } }
  if (family !== 'TCP4' && family !== 'TCP6') return malformed(`v1 protocol family must be TCP4, TCP6 or UNKNOWN, got ${JSON.stringify(family ?? '')}`)
  // Exactly one space between fields, no trailing space. [proxy-protocol 2.1]
  if (fields.length !== 6) return malformed(`v1 ${family} header needs 6 space-separated fields, got ${fields.length}: ${JSON.stringify(line)}`)
  const [, , srcAddress, dstAddress, srcPort, dstPort] = fields
  const isFamily = family === 'TCP4' ? net.isIPv4 : net.isIPv6
  for (const [what, address] of [['source', srcAddress], ['destination', dstAddress]]) {
    if (!isFamily(address)) return malformed(`v1 ${what} address ${JSON.stringify(address)} is not an ${family === 'TCP4' ? 'IPv4' : 'IPv6'} address`)
  }
  for (const [what, port] of [['source', srcPort], ['destination', dstPort]]) {
    if (!V1_PORT.test(port) || Number(port) > 65_535) return malformed(`v1 ${what} port ${JSON.stringify(port)} is not a port number`)
  }
  return {
    status: 'decoded',
    length,
    header: {
      version: 1,
      command: 'proxy',
      source: { address: srcAddress, port: Number(srcPort) },
      destination: { address: dstAddress, port: Number(dstPort) },
    },
  }
}

function decodeV2(buf: Buffer): ProxyDecodeResult {
  const malformed = (reason: string): ProxyDecodeResult => ({ status: 'malformed', version: 2, reason })
  if (buf.length < V2_FIXED_LENGTH) return { status: 'incomplete' }
  const versionCommand = buf[12]
  // The highest four bits are the version, "must always be sent as \x2". [proxy-protocol 2.2]
  if (versionCommand >> 4 !== 2) return malformed(`v2 version nibble must be 2, got ${versionCommand >> 4}`)
  const command = versionCommand & 0x0f
  // 0x0 LOCAL, 0x1 PROXY; "the receiver must drop connections presenting unexpected values here". [proxy-protocol 2.2]
  if (command > 1) return malformed(`v2 command must be LOCAL (0) or PROXY (1), got ${command}`)
  const addressLength = buf.readUInt16BE(14)
  const length = V2_FIXED_LENGTH + addressLength
  if (length > V2_MAX_LENGTH) return malformed(`v2 header of ${length} bytes exceeds the ${V2_MAX_LENGTH}-byte bound`)
  if (buf.length < length) return { status: 'incomplete' }
  // LOCAL: "the receiver must accept this connection as valid and must use the real connection
  // endpoints and discard the protocol block including the family which is ignored". [proxy-protocol 2.2]
  if (command === 0) return { status: 'decoded', length, header: { version: 2, command: 'local' } }

  const family = buf[13] >> 4
  const transport = buf[13] & 0x0f
  // AF_UNSPEC and AF_UNIX carry no IP address we could use: keep the connection's endpoints. [proxy-protocol 2.2]
  if (family === 0x0 || family === 0x3) return { status: 'decoded', length, header: { version: 2, command: 'local' } }
  if (family !== 0x1 && family !== 0x2) return malformed(`v2 address family must be UNSPEC, INET, INET6 or UNIX, got ${family}`)
  if (transport !== 0x1) return malformed(`v2 transport must be STREAM (TCP) for an MQTT connection, got ${transport}`)
  const addressBytes = family === 0x1 ? 4 : 16
  const needed = 2 * addressBytes + 4
  if (addressLength < needed) return malformed(`v2 ${family === 0x1 ? 'INET' : 'INET6'} address block needs ${needed} bytes, the header declares ${addressLength}`)
  const block = buf.subarray(V2_FIXED_LENGTH, V2_FIXED_LENGTH + needed)
  const format = family === 0x1 ? formatIPv4 : formatIPv6
  // What follows the addresses up to `length` are TLVs, which we skip. [proxy-protocol 2.2.7]
  return {
    status: 'decoded',
    length,
    header: {
      version: 2,
      command: 'proxy',
      source: { address: format(block.subarray(0, addressBytes)), port: block.readUInt16BE(2 * addressBytes) },
      destination: { address: format(block.subarray(addressBytes, 2 * addressBytes)), port: block.readUInt16BE(2 * addressBytes + 2) },
    },
  }
}

function formatIPv4(bytes: Buffer): string {
  return Array.from(bytes).join('.')
}

/** RFC 5952 text form (lowercase, longest zero run compressed), IPv4-mapped as `::ffff:a.b.c.d`. */
export function formatIPv6(bytes: Buffer): string {
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${formatIPv4(bytes.subarray(12))}`
  }
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(2 * i))
  let bestStart = -1
  let bestLength = 0
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    // A single zero group is not compressed. [RFC 5952 4.2.2]
    if (j - i > bestLength && j - i > 1) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart < 0) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`
}

/** What the first bytes of a connection said, for a listener in the given mode. */
export type Preamble =
  /** No PROXY header (allowed by the mode); the client's bytes are back in the socket. */
  | { readonly outcome: 'plain' }
  /** A PROXY header was read and removed; the client's bytes that followed are back in the socket. */
  | { readonly outcome: 'proxied'; readonly header: ProxyHeader }
  /** The connection must be closed: `reason` explains why, for the log. */
  | { readonly outcome: 'refused'; readonly reason: string }
  /** The peer closed, failed or stayed silent before a decision: nothing worth more than a debug line. */
  | { readonly outcome: 'gone'; readonly reason: string }

export type PreambleJudgement =
  | { readonly outcome: 'incomplete' }
  | { readonly outcome: 'plain' }
  /** `length` bytes at the start are the header. */
  | { readonly outcome: 'proxied'; readonly header: ProxyHeader; readonly length: number }
  | { readonly outcome: 'refused'; readonly reason: string }

/**
 * Decides, for the first bytes of a connection, what the listener's mode makes of them. Pure: the
 * socket-reading loop below feeds it the bytes gathered so far.
 */
export function judgePreamble(buf: Buffer, mode: ProxyProtocolMode): PreambleJudgement {
  const decoded = decodeProxyHeader(buf)
  switch (decoded.status) {
    case 'incomplete': {
      // With the mode off only the signature matters: stop waiting once it is certainly there.
      const signature = detectProxySignature(buf)
      if (mode === 'off' && (signature === 'v1' || signature === 'v2')) return refuseOff(signature)
      return { outcome: 'incomplete' }
    }
    case 'absent':
      if (mode === 'required') {
        return {
          outcome: 'refused',
          reason: `no PROXY protocol header (the connection starts with 0x${buf.subarray(0, 8).toString('hex')}) and this listener has proxyProtocol: required; only the load balancer may connect to it`,
        }
      }
      return { outcome: 'plain' }
    case 'malformed':
      if (mode === 'off') return refuseOff(decoded.version === 1 ? 'v1' : 'v2')
      return { outcome: 'refused', reason: `malformed PROXY protocol header: ${decoded.reason}` }
    case 'decoded':
      if (mode === 'off') return refuseOff(decoded.header.version === 1 ? 'v1' : 'v2')
      return { outcome: 'proxied', header: decoded.header, length: decoded.length }
  }
}

function refuseOff(version: 'v1' | 'v2'): PreambleJudgement {
  return {
    outcome: 'refused',
    reason: `the connection starts with a PROXY protocol ${version} header but this listener has proxyProtocol: off; set proxyProtocol: optional or required on the listener the load balancer sends to`,
  }
}

/**
 * Reads the first bytes of `socket` until the mode can decide, within `timeoutMs`, then calls
 * `done` synchronously (so that no socket event falls between this reader and the next one). On
 * `plain` and `proxied` the socket is left in non-flowing mode with the client's own bytes put back,
 * ready for the next reader (aedes, the TLS or the HTTP server).
 */
export function readPreamble(socket: net.Socket, mode: ProxyProtocolMode, timeoutMs: number, done: (preamble: Preamble) => void): void {
  let buffered: Buffer = Buffer.alloc(0)
  const finish = (preamble: Preamble, rest?: Buffer): void => {
    clearTimeout(timer)
    socket.off('readable', onReadable)
    socket.off('end', onEnd)
    socket.off('error', onError)
    if (rest && rest.length > 0) socket.unshift(rest)
    done(preamble)
  }
  const onReadable = (): void => {
    let chunk: Buffer | null
    while ((chunk = socket.read() as Buffer | null) !== null) buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    if (buffered.length === 0) return
    const verdict = judgePreamble(buffered, mode)
    switch (verdict.outcome) {
      case 'incomplete':
        // Unreachable with a well-formed bound (v1 and v2 both decide by V2_MAX_LENGTH); a safety net.
        if (buffered.length > V2_MAX_LENGTH) finish({ outcome: 'refused', reason: 'malformed PROXY protocol header: longer than any valid header' })
        return
      case 'plain':
        finish(verdict, buffered)
        return
      case 'proxied':
        finish({ outcome: 'proxied', header: verdict.header }, buffered.subarray(verdict.length))
        return
      case 'refused':
        finish(verdict)
    }
  }
  const onEnd = (): void => {
    finish(buffered.length > 0 && mode !== 'off'
      ? { outcome: 'refused', reason: `the peer closed after ${buffered.length} bytes of an incomplete PROXY protocol header` }
      : { outcome: 'gone', reason: 'the peer closed before sending anything' })
  }
  const onError = (err: Error): void => finish({ outcome: 'gone', reason: `socket error before the first bytes: ${err.message}` })
  const timer = setTimeout(() => {
    const seconds = timeoutMs / 1000
    if (buffered.length > 0 && mode !== 'off') finish({ outcome: 'refused', reason: `incomplete PROXY protocol header after ${seconds} s (${buffered.length} bytes)` })
    else if (mode === 'required') finish({ outcome: 'refused', reason: `no PROXY protocol header within ${seconds} s and this listener has proxyProtocol: required` })
    else finish({ outcome: 'gone', reason: `nothing received within ${seconds} s` })
  }, timeoutMs)
  socket.on('readable', onReadable)
  socket.on('end', onEnd)
  socket.on('error', onError)
}
