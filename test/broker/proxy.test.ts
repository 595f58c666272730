import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type tls from 'node:tls'
import { startFleetmq, type LogLine, type RunningFleetmq } from '../helpers/fleetmq.js'
import { freePort, startHaproxy, type RunningHaproxy } from '../helpers/haproxy.js'
import { makeCertificates, type Certificates } from '../helpers/tls.js'
import { connectOnce } from '../helpers/mqtt-client.js'

/*
 * PROXY protocol end to end: a real HAProxy terminates TLS and sends v2 (and v1) to the broker,
 * and raw sockets send what a load balancer or a confused client might. One broker: `lb` requires a
 * header, `direct` has PROXY off, `opt` takes either; `lb-tls`, `lb-ws` and `lb-wss` require one on
 * the other listener types (HAProxy passes their bytes through untouched).
 */

let certs: Certificates
let broker: RunningFleetmq
let haproxy: RunningHaproxy
let frontV2: number
let frontV1: number
let passTls: number
let passWs: number
let passWss: number

before(async () => {
  certs = makeCertificates(mkdtempSync(join(tmpdir(), 'fleetmq-proxy-')))
  broker = await startFleetmq({
    config: {
      allowAnonymous: true,
      log: { level: 'debug' },
      listeners: [
        { name: 'lb', type: 'mqtt', host: '127.0.0.1', port: 0, proxyProtocol: 'required' },
        { name: 'direct', type: 'mqtt', host: '127.0.0.1', port: 0 },
        { name: 'opt', type: 'mqtt', host: '127.0.0.1', port: 0, proxyProtocol: 'optional' },
        { name: 'lb-tls', type: 'mqtts', host: '127.0.0.1', port: 0, proxyProtocol: 'required', tls: { cert: certs.cert, key: certs.key } },
        { name: 'lb-ws', type: 'ws', host: '127.0.0.1', port: 0, proxyProtocol: 'required' },
        { name: 'lb-wss', type: 'wss', host: '127.0.0.1', port: 0, proxyProtocol: 'required', tls: { cert: certs.cert, key: certs.key } },
      ],
    },
  })
  frontV2 = await freePort()
  frontV1 = await freePort()
  passTls = await freePort()
  passWs = await freePort()
  passWss = await freePort()
  haproxy = await startHaproxy(`
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls_v2
  bind 127.0.0.1:${frontV2} ssl crt ${certs.pem}
  default_backend brokers_v2
backend brokers_v2
  # Health checks carry a PROXY v2 LOCAL header, as the AWS NLB's do.
  server b1 127.0.0.1:${broker.ports.lb} send-proxy-v2 check check-send-proxy inter 500
frontend tls_v1
  bind 127.0.0.1:${frontV1} ssl crt ${certs.pem}
  default_backend brokers_v1
backend brokers_v1
  server b1 127.0.0.1:${broker.ports.lb} send-proxy
frontend pass_mqtts
  bind 127.0.0.1:${passTls}
  default_backend to_mqtts
backend to_mqtts
  server b1 127.0.0.1:${broker.ports['lb-tls']} send-proxy-v2
frontend pass_ws
  bind 127.0.0.1:${passWs}
  default_backend to_ws
backend to_ws
  server b1 127.0.0.1:${broker.ports['lb-ws']} send-proxy
frontend pass_wss
  bind 127.0.0.1:${passWss}
  default_backend to_wss
backend to_wss
  server b1 127.0.0.1:${broker.ports['lb-wss']} send-proxy-v2
`)
})

after(async () => {
  await haproxy?.stop()
  assert.equal(await broker?.stop(), 0)
})

/** An MQTT 3.1.1 CONNECT with a client id, clean session, keep-alive 60 s. [MQTT-3.1] */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId)
  const body = Buffer.concat([Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, id.length >> 8, id.length & 0xff]), id])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V2_LOCAL = Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])])

/** Opens a raw TCP connection, writes `bytes`, and resolves with what came back once the broker closed it. */
async function rawExchange(port: number, bytes: Buffer, until: 'close' | 'data' = 'close'): Promise<{ localPort: number; received: Buffer; socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1')
  await once(socket, 'connect')
  const localPort = socket.localPort as number
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  socket.on('error', () => undefined)
  socket.write(bytes)
  await once(socket, until)
  return { localPort, received: Buffer.concat(chunks), socket }
}

const problems = (listener: string, from = 0): LogLine[] =>
  broker.logs.slice(from).filter((l) => l.level >= 40 && l.listener === listener)

/** Log lines up to this point: a client connecting now is logged after everything before it. */
async function checkpoint(name: string): Promise<void> {
  const client = await connectOnce(`mqtt://127.0.0.1:${broker.ports.direct}`, { clientId: name })
  await broker.waitForLog((l) => l.msg.startsWith(`client ${name} connected`))
  await client.endAsync()
}

test('through HAProxy (TLS, PROXY v2 and v1) the broker logs the client\'s own address and port', async () => {
  const ca = readFileSync(certs.ca)
  for (const [version, port] of [['v2', frontV2], ['v1', frontV1]] as const) {
    const clientId = `via-haproxy-${version}`
    const client = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca, clientId })
    const localPort = (client.stream as tls.TLSSocket).localPort
    const line = await broker.waitForLog((l) => l.msg.startsWith(`client ${clientId} connected`))
    assert.equal(line.listener, 'lb')
    assert.equal(line.remoteAddress, '127.0.0.1')
    assert.equal(line.remotePort, localPort, `${version}: the port is the client's, as HAProxy saw it`)
    assert.equal(line.proxied, true)
    // The TCP peer was HAProxy, on a port of its own.
    const accepted = broker.logs.find((l) => l.listener === 'lb' && l.remotePort === localPort && typeof l.peerPort === 'number')
    assert.ok(accepted, 'an accepted-connection line names both addresses')
    assert.notEqual(accepted.peerPort, localPort)
    assert.equal(accepted.proxyVersion, version === 'v2' ? 2 : 1)
    await client.endAsync()
  }
  const published = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile('mosquitto_pub', ['-h', 'localhost', '-p', String(frontV2), '--cafile', certs.ca, '-i', 'mosquitto-via-lb', '-t', 'lb/t', '-m', 'x'],
      { timeout: 20_000 }, (err, _out, stderr) => resolve({ code: err ? 1 : 0, stderr }))
  })
  assert.equal(published.code, 0, published.stderr)
  const line = await broker.waitForLog((l) => l.msg.startsWith('client mosquitto-via-lb connected'))
  assert.equal(line.proxied, true)
})

test('HAProxy health checks (PROXY v2 LOCAL, then close) log at debug only', async () => {
  const from = broker.logs.length
  await broker.waitForLog((l) => l.listener === 'lb' && /PROXY v2 LOCAL connection .*health check/.test(l.msg) && broker.logs.indexOf(l) >= from, 15_000)
  await checkpoint('after-health-checks')
  assert.deepEqual(problems('lb'), [])
})

test('a raw v2 LOCAL header followed by close produces no warning or error', async () => {
  const from = broker.logs.length
  const { localPort } = await rawExchange(broker.ports.lb, V2_LOCAL, 'close')
  await broker.waitForLog((l) => l.listener === 'lb' && l.peerPort === localPort && /LOCAL/.test(l.msg))
  await checkpoint('after-local')
  assert.deepEqual(problems('lb', from), [])
  // LOCAL then MQTT is served with the connection's own address.
  const served = await rawExchange(broker.ports.lb, Buffer.concat([V2_LOCAL, connectPacket('local-then-mqtt')]), 'data')
  assert.equal(served.received[0], 0x20, 'CONNACK')
  const line = await broker.waitForLog((l) => l.msg.startsWith('client local-then-mqtt connected'))
  assert.equal(line.remotePort, served.localPort)
  assert.equal(line.proxied, false)
  served.socket.destroy()
})

test('a required listener closes a connection without a PROXY header and warns, naming listener and peer', async () => {
  await assert.rejects(connectOnce(`mqtt://127.0.0.1:${broker.ports.lb}`, { clientId: 'no-header' }))
  const { localPort, received } = await rawExchange(broker.ports.lb, connectPacket('no-header-raw'))
  assert.equal(received.length, 0, 'no CONNACK')
  const warning = await broker.waitForLog((l) => l.level === 40 && l.peerPort === localPort)
  assert.equal(warning.listener, 'lb')
  assert.match(warning.msg, new RegExp(`^lb: closed the connection from 127\\.0\\.0\\.1:${localPort}: no PROXY protocol header .*required`))
})

test('a malformed PROXY header is refused with the reason', async () => {
  const cases: [Buffer, RegExp][] = [
    [Buffer.from('PROXY TCP4 300.1.1.1 127.0.0.1 5000 1883\r\n'), /malformed PROXY protocol header: v1 source address "300\.1\.1\.1"/],
    [Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`), /no CRLF within 107 bytes/],
    [Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4])]), /INET address block needs 12 bytes/],
  ]
  for (const [header, reason] of cases) {
    const { localPort, received } = await rawExchange(broker.ports.lb, Buffer.concat([header, connectPacket('malformed')]))
    assert.equal(received.length, 0)
    const warning = await broker.waitForLog((l) => l.level === 40 && l.peerPort === localPort)
    assert.match(warning.msg, reason)
  }
})

test('a PROXY header on a listener with proxyProtocol off is closed; other clients carry on', async () => {
  const sub = await connectOnce(`mqtt://127.0.0.1:${broker.ports.direct}`, { clientId: 'bystander' })
  await sub.subscribeAsync('direct/t', { qos: 1 })
  for (const header of [Buffer.from('PROXY TCP4 192.0.2.1 127.0.0.1 1000 1883\r\n'), V2_LOCAL]) {
    const { localPort, received } = await rawExchange(broker.ports.direct, Buffer.concat([header, connectPacket('sneaky')]))
    assert.equal(received.length, 0)
    const warning = await broker.waitForLog((l) => l.level === 40 && l.peerPort === localPort)
    assert.equal(warning.listener, 'direct')
    assert.match(warning.msg, /PROXY protocol v[12] header but this listener has proxyProtocol: off/)
  }
  const pub = await connectOnce(`mqtt://127.0.0.1:${broker.ports.direct}`)
  const received = new Promise<string>((resolve) => sub.on('message', (_t, p) => resolve(p.toString())))
  await pub.publishAsync('direct/t', 'still here', { qos: 1 })
  assert.equal(await received, 'still here')
  assert.equal(broker.process.exitCode, null)
  assert.ok(!broker.logs.some((l) => l.msg.startsWith('client sneaky connected')))
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('an optional listener serves clients with and without a header', async () => {
  const proxied = await rawExchange(broker.ports.opt,
    Buffer.concat([Buffer.from('PROXY TCP6 2001:db8::7 ::1 40404 1883\r\n'), connectPacket('opt-proxied')]), 'data')
  assert.equal(proxied.received[0], 0x20, 'CONNACK')
  const line = await broker.waitForLog((l) => l.msg.startsWith('client opt-proxied connected'))
  assert.equal(line.remoteAddress, '2001:db8::7')
  assert.equal(line.remotePort, 40404)
  assert.match(line.msg, /from 2001:db8::7:40404 on opt/)
  proxied.socket.destroy()
  const plain = await connectOnce(`mqtt://127.0.0.1:${broker.ports.opt}`, { clientId: 'opt-plain' })
  const plainLine = await broker.waitForLog((l) => l.msg.startsWith('client opt-plain connected'))
  assert.equal(plainLine.proxied, false)
  assert.equal(plainLine.remotePort, (plain.stream as net.Socket).localPort)
  await plain.endAsync()
})

test('mqtts, ws and wss listeners read the PROXY header before TLS and HTTP', async () => {
  const ca = readFileSync(certs.ca)
  const tlsClient = await connectOnce(`mqtts://127.0.0.1:${passTls}`, { ca, clientId: 'pp-mqtts' })
  const wsPort = await freePort()
  const wsClient = await connectOnce(`ws://127.0.0.1:${passWs}/mqtt`, { clientId: 'pp-ws', wsOptions: { localPort: wsPort } })
  const wssPort = await freePort()
  const wssClient = await connectOnce(`wss://127.0.0.1:${passWss}/mqtt`, { ca, clientId: 'pp-wss', wsOptions: { localPort: wssPort } })
  const expected: [string, string, number][] = [
    ['pp-mqtts', 'lb-tls', (tlsClient.stream as tls.TLSSocket).localPort as number],
    ['pp-ws', 'lb-ws', wsPort],
    ['pp-wss', 'lb-wss', wssPort],
  ]
  for (const [clientId, listener, port] of expected) {
    const line = await broker.waitForLog((l) => l.msg.startsWith(`client ${clientId} connected`))
    assert.deepEqual([line.listener, line.remoteAddress, line.remotePort, line.proxied], [listener, '127.0.0.1', port, true], clientId)
  }
  await Promise.all([tlsClient.endAsync(), wsClient.endAsync(), wssClient.endAsync()])
  // Without the load balancer the same listeners refuse, before any TLS or HTTP.
  await assert.rejects(connectOnce(`mqtts://127.0.0.1:${broker.ports['lb-tls']}`, { ca }))
  await assert.rejects(connectOnce(`ws://127.0.0.1:${broker.ports['lb-ws']}/mqtt`))
  await broker.waitForLog((l) => l.level === 40 && l.listener === 'lb-ws' && /no PROXY protocol header/.test(l.msg))
})
