import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import {
  decodeProxyHeader,
  detectProxySignature,
  formatIPv6,
  judgePreamble,
  readPreamble,
  V2_MAX_LENGTH,
  type Preamble,
} from '../../broker/listeners/proxy-protocol.js'

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const CONNECT = Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00])

/** A v2 header: version/command byte, family/transport byte, address block, then TLVs. */
function v2(versionCommand: number, familyTransport: number, block: Buffer, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  const length = Buffer.alloc(2)
  length.writeUInt16BE(block.length + tlvs.length)
  return Buffer.concat([SIG, Buffer.from([versionCommand, familyTransport]), length, block, tlvs])
}

function inet4(src: string, dst: string, sport: number, dport: number): Buffer {
  const ports = Buffer.alloc(4)
  ports.writeUInt16BE(sport, 0)
  ports.writeUInt16BE(dport, 2)
  return Buffer.concat([Buffer.from(src.split('.').map(Number)), Buffer.from(dst.split('.').map(Number)), ports])
}

test('v1 TCP4 decodes the source and destination and reports the header length', () => {
  const header = Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.5 51234 1883\r\n')
  const result = decodeProxyHeader(Buffer.concat([header, CONNECT]))
  assert.deepEqual(result, {
    status: 'decoded',
    length: header.length,
    header: { version: 1, command: 'proxy', source: { address: '203.0.113.7', port: 51234 }, destination: { address: '10.0.0.5', port: 1883 } },
  })
})

test('v1 TCP6 and UNKNOWN', () => {
  const six = decodeProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n'))
  assert.equal(six.status, 'decoded')
  assert.deepEqual(six.status === 'decoded' && six.header.source, { address: '2001:db8::1', port: 4000 })
  const unknown = decodeProxyHeader(Buffer.from('PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 x y\r\n'))
  assert.equal(unknown.status, 'decoded')
  assert.deepEqual(unknown.status === 'decoded' && unknown.header, { version: 1, command: 'local' })
})

test('v1 split at every byte is incomplete until the CRLF arrives', () => {
  const header = Buffer.from('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n')
  for (let cut = 0; cut < header.length; cut++) {
    assert.equal(decodeProxyHeader(header.subarray(0, cut)).status, 'incomplete', `cut at ${cut}`)
  }
  assert.equal(decodeProxyHeader(header).status, 'decoded')
})

test('malformed v1 headers are named', () => {
  const cases: [string, RegExp][] = [
    ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', /family must be TCP4, TCP6 or UNKNOWN/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /needs 6 space-separated fields/],
    ['PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n', /source address "1\.2\.3\.999" is not an IPv4/],
    ['PROXY TCP4 ::1 5.6.7.8 1 2\r\n', /source address "::1" is not an IPv4/],
    ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /not an IPv6/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', /source port "65536"/],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', /source port "01"/],
    ['PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', /needs 6 space-separated fields/],
    [`PROXY ${'x'.repeat(120)}`, /no CRLF within 107 bytes/],
  ]
  for (const [text, reason] of cases) {
    const result = decodeProxyHeader(Buffer.from(text))
    assert.equal(result.status, 'malformed', text)
    assert.match(result.status === 'malformed' ? result.reason : '', reason, text)
  }
})

test('v2 PROXY TCP4 with TLVs skips the TLVs and leaves the client bytes after the header', () => {
  // An AWS-style TLV: type 0xEA, length 0x000C, a VPC endpoint id.
  const tlv = Buffer.concat([Buffer.from([0xea, 0x00, 0x0d, 0x01]), Buffer.from('vpce-0123456')])
  const header = v2(0x21, 0x11, inet4('198.51.100.20', '10.0.1.10', 40000, 1883), tlv)
  const result = decodeProxyHeader(Buffer.concat([header, CONNECT]))
  assert.deepEqual(result, {
    status: 'decoded',
    length: header.length,
    header: { version: 2, command: 'proxy', source: { address: '198.51.100.20', port: 40000 }, destination: { address: '10.0.1.10', port: 1883 } },
  })
})

test('v2 PROXY TCP6, including an IPv4-mapped address', () => {
  const src = Buffer.from('20010db8000000000000000000000001', 'hex')
  const dst = Buffer.from('00000000000000000000ffffc0000201', 'hex')
  const ports = Buffer.from([0x1f, 0x90, 0x07, 0x5b])
  const result = decodeProxyHeader(v2(0x21, 0x21, Buffer.concat([src, dst, ports])))
  assert.equal(result.status, 'decoded')
  if (result.status !== 'decoded') return
  assert.deepEqual(result.header.source, { address: '2001:db8::1', port: 8080 })
  assert.deepEqual(result.header.destination, { address: '::ffff:192.0.2.1', port: 1883 })
})

test('IPv6 text form follows RFC 5952', () => {
  assert.equal(formatIPv6(Buffer.from('00000000000000000000000000000001', 'hex')), '::1')
  assert.equal(formatIPv6(Buffer.from('20010db8000000010000000000000001', 'hex')), '2001:db8:0:1::1')
  assert.equal(formatIPv6(Buffer.from('20010db8000100010001000100010001', 'hex')), '2001:db8:1:1:1:1:1:1')
  assert.equal(formatIPv6(Buffer.from('20010db8000000000001000000000001', 'hex')), '2001:db8::1:0:0:1')
  assert.equal(formatIPv6(Buffer.from('00000000000000000000000000000000', 'hex')), '::')
})

test('v2 LOCAL keeps the connection endpoints whatever the address block says', () => {
  const bare = decodeProxyHeader(v2(0x20, 0x00, Buffer.alloc(0)))
  assert.deepEqual(bare, { status: 'decoded', length: 16, header: { version: 2, command: 'local' } })
  const withBlock = decodeProxyHeader(v2(0x20, 0x11, inet4('1.1.1.1', '2.2.2.2', 1, 2)))
  assert.deepEqual(withBlock, { status: 'decoded', length: 28, header: { version: 2, command: 'local' } })
})

test('v2 PROXY with UNSPEC or UNIX family keeps the connection endpoints', () => {
  assert.deepEqual(decodeProxyHeader(v2(0x21, 0x00, Buffer.alloc(0))), { status: 'decoded', length: 16, header: { version: 2, command: 'local' } })
  assert.deepEqual(decodeProxyHeader(v2(0x21, 0x31, Buffer.alloc(216))), { status: 'decoded', length: 232, header: { version: 2, command: 'local' } })
})

test('v2 split at every byte is incomplete until the declared length arrived', () => {
  const header = v2(0x21, 0x11, inet4('192.0.2.9', '192.0.2.10', 5, 6), Buffer.from([0x04, 0x00, 0x01, 0x00]))
  for (let cut = 0; cut < header.length; cut++) {
    assert.equal(decodeProxyHeader(header.subarray(0, cut)).status, 'incomplete', `cut at ${cut}`)
  }
})

test('malformed v2 headers are named', () => {
  const cases: [Buffer, RegExp][] = [
    [v2(0x11, 0x11, inet4('1.1.1.1', '2.2.2.2', 1, 2)), /version nibble must be 2, got 1/],
    [v2(0x22, 0x11, inet4('1.1.1.1', '2.2.2.2', 1, 2)), /command must be LOCAL \(0\) or PROXY \(1\), got 2/],
    [v2(0x21, 0x41, inet4('1.1.1.1', '2.2.2.2', 1, 2)), /address family must be/],
    [v2(0x21, 0x12, inet4('1.1.1.1', '2.2.2.2', 1, 2)), /transport must be STREAM/],
    [v2(0x21, 0x11, Buffer.alloc(8)), /INET address block needs 12 bytes, the header declares 8/],
    [v2(0x21, 0x21, Buffer.alloc(12)), /INET6 address block needs 36 bytes/],
    [Buffer.concat([SIG, Buffer.from([0x21, 0x11, 0xff, 0xff])]), new RegExp(`exceeds the ${V2_MAX_LENGTH}-byte bound`)],
  ]
  for (const [buf, reason] of cases) {
    const result = decodeProxyHeader(buf)
    assert.equal(result.status, 'malformed', String(reason))
    assert.match(result.status === 'malformed' ? result.reason : '', reason)
  }
})

test('signature detection: absent on the first differing byte, incomplete on a prefix', () => {
  assert.equal(detectProxySignature(CONNECT), 'absent')
  assert.equal(detectProxySignature(Buffer.from('GET /mqtt HTTP/1.1\r\n')), 'absent')
  assert.equal(detectProxySignature(Buffer.from([0x16, 0x03, 0x01])), 'absent')
  assert.equal(detectProxySignature(Buffer.from('PRO')), 'incomplete')
  assert.equal(detectProxySignature(SIG.subarray(0, 5)), 'incomplete')
  assert.equal(detectProxySignature(Buffer.alloc(0)), 'incomplete')
  assert.equal(detectProxySignature(Buffer.from('PROXY ')), 'v1')
  assert.equal(detectProxySignature(SIG), 'v2')
})

test('the listener mode decides: off refuses any PROXY signature, required refuses its absence', () => {
  const header = Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n')
  assert.equal(judgePreamble(CONNECT, 'off').outcome, 'plain')
  assert.equal(judgePreamble(CONNECT, 'optional').outcome, 'plain')
  assert.match(String((judgePreamble(CONNECT, 'required') as { reason?: string }).reason), /no PROXY protocol header \(the connection starts with 0x100c00044d515454\).*required/)
  // Off decides as soon as the signature is complete, without waiting for the rest of the header.
  assert.match(String((judgePreamble(Buffer.from('PROXY '), 'off') as { reason?: string }).reason), /PROXY protocol v1 header but this listener has proxyProtocol: off/)
  assert.match(String((judgePreamble(SIG, 'off') as { reason?: string }).reason), /v2 header but this listener has proxyProtocol: off/)
  assert.equal(judgePreamble(header, 'optional').outcome, 'proxied')
  assert.equal(judgePreamble(header, 'required').outcome, 'proxied')
  assert.match(String((judgePreamble(Buffer.from('PROXY TCP4 x 5.6.7.8 1 2\r\n'), 'required') as { reason?: string }).reason), /malformed PROXY protocol header: v1 source address "x"/)
})

/** A connected socket pair on loopback: `client` writes, `server` is what a listener reads. */
async function socketPair(): Promise<{ client: net.Socket; server: net.Socket; close(): void }> {
  const listener = net.createServer()
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve))
  const accepted = once(listener, 'connection')
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1')
  const [server] = (await accepted) as [net.Socket]
  await once(client, 'connect').catch(() => undefined)
  return { client, server, close: () => { client.destroy(); server.destroy(); listener.close() } }
}

test('readPreamble reassembles a header sent in pieces and puts the client bytes back in the socket', async () => {
  const pair = await socketPair()
  try {
    const header = v2(0x21, 0x11, inet4('203.0.113.50', '10.0.0.1', 61000, 1883))
    const preamble = new Promise<Preamble>((resolve) => readPreamble(pair.server, 'required', 10_000, resolve))
    pair.client.write(header.subarray(0, 7))
    await new Promise((resolve) => setTimeout(resolve, 50))
    pair.client.write(header.subarray(7, 20))
    await new Promise((resolve) => setTimeout(resolve, 50))
    pair.client.write(Buffer.concat([header.subarray(20), CONNECT]))
    const result = await preamble
    assert.equal(result.outcome, 'proxied')
    assert.deepEqual(result.outcome === 'proxied' && result.header.source, { address: '203.0.113.50', port: 61000 })
    // The next reader gets exactly the MQTT bytes, first.
    const rest = await new Promise<Buffer>((resolve) => pair.server.once('data', resolve))
    assert.deepEqual(rest, CONNECT)
  } finally {
    pair.close()
  }
})

test('readPreamble times out a required listener that receives nothing', async () => {
  const pair = await socketPair()
  try {
    const result = await new Promise<Preamble>((resolve) => readPreamble(pair.server, 'required', 200, resolve))
    assert.deepEqual(result, { outcome: 'refused', reason: 'no PROXY protocol header within 0.2 s and this listener has proxyProtocol: required' })
  } finally {
    pair.close()
  }
})

test('readPreamble reports a peer that closes mid-header as refused, and one that sends nothing as gone', async () => {
  const midHeader = await socketPair()
  const silent = await socketPair()
  try {
    const refused = new Promise<Preamble>((resolve) => readPreamble(midHeader.server, 'optional', 10_000, resolve))
    midHeader.client.end(Buffer.from('PROXY TCP4 1.2'))
    assert.match(String((await refused as { reason?: string }).reason), /closed after 14 bytes of an incomplete PROXY protocol header/)
    const gone = new Promise<Preamble>((resolve) => readPreamble(silent.server, 'optional', 10_000, resolve))
    silent.client.end()
    assert.equal((await gone).outcome, 'gone')
  } finally {
    midHeader.close()
    silent.close()
  }
})
