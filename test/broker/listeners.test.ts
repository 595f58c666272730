import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import type { MqttClient } from 'mqtt'
import WebSocket from 'ws'
import { stringify as toYaml } from 'yaml'
import { runCli, startFleetmq } from '../helpers/fleetmq.js'
import { makeCertificates, makeClientCertificate, type Certificates } from '../helpers/tls.js'
import { connectOnce } from '../helpers/mqtt-client.js'
import { runProgram as run } from '../helpers/program.js'

let dir: string
let certs: Certificates
let device: { cert: string; key: string }

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'fleetmq-listeners-'))
  certs = makeCertificates(dir)
  device = makeClientCertificate(certs, 'device-42')
})

/** Resolves on CONNACK; rejects on an error or a close before it (a refused TLS handshake closes). */
/** `sub` receives what `pub` publishes: the listener carries MQTT both ways. */
async function roundTrip(sub: MqttClient, pub: MqttClient, topic: string): Promise<void> {
  await sub.subscribeAsync(topic, { qos: 1 })
  const received = new Promise<string>((resolve) => sub.on('message', (t, p) => { if (t === topic) resolve(p.toString()) }))
  await pub.publishAsync(topic, `hello ${topic}`, { qos: 1 })
  assert.equal(await received, `hello ${topic}`)
}

function peerFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(ca) }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256
      socket.end()
      resolve(fingerprint)
    })
    socket.once('error', reject)
  })
}

const mqtts = (extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ type: 'mqtts', host: '127.0.0.1', port: 0, tls: { cert: certs.cert, key: certs.key, ...extra } })

test('mqtts serves MQTT.js and mosquitto_pub/sub verified with --cafile, and refuses TLS 1.1', async () => {
  const broker = await startFleetmq({ config: { allowAnonymous: true, listeners: [mqtts()] } })
  try {
    const port = broker.ports.mqtts
    const ca = readFileSync(certs.ca)
    const sub = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca })
    const pub = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca })
    await roundTrip(sub, pub, 'tls/mqttjs')

    const fromMosquitto = new Promise<string>((resolve) => sub.on('message', (t, p) => { if (t === 'tls/mosquitto') resolve(p.toString()) }))
    await sub.subscribeAsync('tls/mosquitto', { qos: 1 })
    const published = await run('mosquitto_pub', ['-h', 'localhost', '-p', String(port), '--cafile', certs.ca, '-t', 'tls/mosquitto', '-m', 'from mosquitto', '-q', '1'])
    assert.equal(published.code, 0, published.stderr)
    assert.equal(await fromMosquitto, 'from mosquitto')

    await pub.publishAsync('tls/retained', 'kept', { qos: 1, retain: true })
    const received = await run('mosquitto_sub', ['-h', 'localhost', '-p', String(port), '--cafile', certs.ca, '-t', 'tls/retained', '-C', '1', '-W', '15'])
    assert.equal(received.code, 0, received.stderr)
    assert.equal(received.stdout.trim(), 'kept')

    // A client that only speaks TLS 1.1 gets the server's protocol_version alert (RFC 8996).
    const refused = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca, minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' },
        () => reject(new Error(`TLS 1.1 handshake succeeded (${socket.getProtocol()})`)))
      socket.once('error', resolve)
    })
    assert.equal(refused.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION')
    await Promise.all([sub.endAsync(), pub.endAsync()])
  } finally {
    await broker.stop()
  }
})

test('client certificates: required ones are verified, and the CN is recorded for the connection', async () => {
  const broker = await startFleetmq({
    config: { allowAnonymous: true, listeners: [mqtts({ ca: certs.ca, requireClientCert: true })] },
  })
  try {
    const port = broker.ports.mqtts
    const ca = readFileSync(certs.ca)
    const client = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca, cert: readFileSync(device.cert), key: readFileSync(device.key), clientId: 'with-cert' })
    const line = await broker.waitForLog((l) => /^client with-cert connected/.test(l.msg))
    assert.equal(line.tlsCommonName, 'device-42')
    assert.equal(line.listener, 'mqtts:0')

    await assert.rejects(connectOnce(`mqtts://127.0.0.1:${port}`, { ca, clientId: 'without-cert' }))
    assert.ok(!broker.logs.some((l) => /^client without-cert connected/.test(l.msg)))

    const published = await run('mosquitto_pub', ['-h', 'localhost', '-p', String(port), '--cafile', certs.ca,
      '--cert', device.cert, '--key', device.key, '-i', 'mosquitto-cert', '-t', 'cert/ok', '-m', 'x'])
    assert.equal(published.code, 0, published.stderr)
    assert.equal((await broker.waitForLog((l) => /^client mosquitto-cert connected/.test(l.msg))).tlsCommonName, 'device-42')
    const refused = await run('mosquitto_pub', ['-h', 'localhost', '-p', String(port), '--cafile', certs.ca, '-t', 'cert/no', '-m', 'x'])
    assert.notEqual(refused.code, 0)
    await client.endAsync()
  } finally {
    await broker.stop()
  }
})

test('ws and wss serve MQTT.js at /mqtt; other paths get HTTP 404', async () => {
  const broker = await startFleetmq({
    config: {
      allowAnonymous: true,
      listeners: [
        { type: 'ws', host: '127.0.0.1', port: 0 },
        { type: 'wss', host: '127.0.0.1', port: 0, tls: { cert: certs.cert, key: certs.key } },
      ],
    },
  })
  try {
    const ws = await connectOnce(`ws://127.0.0.1:${broker.ports.ws}/mqtt`, { clientId: 'over-ws' })
    const wss = await connectOnce(`wss://127.0.0.1:${broker.ports.wss}/mqtt`, { ca: readFileSync(certs.ca), clientId: 'over-wss', protocolVersion: 5 })
    await roundTrip(ws, wss, 'web/one')
    await roundTrip(wss, ws, 'web/two')
    const wsLine = await broker.waitForLog((l) => /^client over-ws connected/.test(l.msg))
    assert.equal(wsLine.listener, 'ws:0')
    assert.equal(wsLine.remoteAddress, '127.0.0.1')
    assert.equal((await broker.waitForLog((l) => /^client over-wss connected/.test(l.msg))).listener, 'wss:0')

    const wrongPath = await new Promise<number>((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${broker.ports.ws}/elsewhere`, 'mqtt')
      socket.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); socket.terminate() })
      socket.once('open', () => reject(new Error('upgraded on a wrong path')))
      socket.once('error', () => undefined)
    })
    assert.equal(wrongPath, 404)
    await assert.rejects(connectOnce(`ws://127.0.0.1:${broker.ports.ws}/elsewhere`))
    assert.equal((await fetch(`http://127.0.0.1:${broker.ports.ws}/elsewhere`)).status, 404)
    // A plain request to the endpoint is told to upgrade.
    assert.equal((await fetch(`http://127.0.0.1:${broker.ports.ws}/mqtt`)).status, 426)
    await Promise.all([ws.endAsync(), wss.endAsync()])
  } finally {
    await broker.stop()
  }
})

test('SIGHUP swaps the TLS certificate for new connections while an open one stays up; a broken file keeps the old one', async () => {
  const old = makeCertificates(dir, { name: 'old' })
  const fresh = makeCertificates(dir, { name: 'new' })
  const live = { cert: join(dir, 'live.pem'), key: join(dir, 'live-key.pem') }
  copyFileSync(old.cert, live.cert)
  copyFileSync(old.key, live.key)
  const broker = await startFleetmq({
    config: { allowAnonymous: true, listeners: [{ type: 'mqtts', host: '127.0.0.1', port: 0, tls: live }] },
  })
  try {
    const port = broker.ports.mqtts
    const ca = readFileSync(certs.ca)
    const keeper = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca, clientId: 'keeper' })
    let keeperClosed = 0
    keeper.on('close', () => { keeperClosed++ })
    assert.equal((keeper.stream as tls.TLSSocket).getPeerCertificate().fingerprint256, old.fingerprint256)

    copyFileSync(fresh.cert, live.cert)
    copyFileSync(fresh.key, live.key)
    broker.process.kill('SIGHUP')
    await broker.waitForLog((l) => /^mqtts:0: reloaded TLS material/.test(l.msg))
    assert.equal(await peerFingerprint(port, certs.ca), fresh.fingerprint256)

    const other = await connectOnce(`mqtts://127.0.0.1:${port}`, { ca })
    await roundTrip(keeper, other, 'reload/still-up')
    assert.equal(keeperClosed, 0)

    writeFileSync(live.key, 'not a key\n')
    broker.process.kill('SIGHUP')
    const failure = await broker.waitForLog((l) => l.level === 50 && /could not reload TLS material/.test(l.msg))
    assert.match(failure.msg, /tls\.key .*live-key\.pem is not a PEM private key/)
    assert.equal(await peerFingerprint(port, certs.ca), fresh.fingerprint256)
    await roundTrip(other, keeper, 'reload/after-failure')
    assert.equal(keeperClosed, 0)
    await Promise.all([keeper.endAsync(), other.endAsync()])
  } finally {
    await broker.stop()
  }
})

test('unusable TLS material stops the start with an error naming the file', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ cert: join(dir, 'missing.pem'), key: certs.key }, /cannot read tls\.cert .*missing\.pem \(ENOENT\)/],
    [{ cert: certs.key, key: certs.key }, /tls\.cert .*server-key\.pem is not a PEM certificate/],
    [{ cert: certs.cert, key: makeCertificates(dir, { name: 'other' }).key }, /tls\.cert .*server\.pem and tls\.key .*other-key\.pem cannot be used together/],
    [{ cert: certs.cert, key: certs.key, requireClientCert: true }, /client certificates need tls\.ca/],
  ]
  for (const [tlsConfig, message] of cases) {
    const file = join(dir, 'bad.yaml')
    writeFileSync(file, toYaml({ listeners: [{ type: 'mqtts', host: '127.0.0.1', port: 0, tls: tlsConfig }], mgmt: { enabled: false } }))
    const result = await runCli(['start', '--config', file, '--data-dir', dir, '--allow-anonymous', '--log-format', 'json'])
    assert.equal(result.code, 1, result.stderr)
    assert.match(result.stderr, message)
  }
})
