import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import { brokerForFile } from '../helpers/fleetmq.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'

/*
 * Issue 20, item 9: one source must not starve everybody's logins. Connect rate per source
 * address, and a backoff after failed logins that refuses before any password is hashed. The
 * listener takes PROXY protocol, as behind the load balancer, so the test can speak from several
 * source addresses.
 */

const DEVICE = { username: 'device-1', password: 'device-1-password' }

const file = brokerForFile({
  users: [METRICS_ADMIN, DEVICE],
  config: {
    listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0, proxyProtocol: 'required', connectRate: 0 }],
    limits: { connectRatePerAddress: 5, loginFailuresBeforeBackoff: 3, maxLoginBackoff: 2 },
  },
})

/** CONNECT from `source` (through a PROXY v1 header); resolves with the CONNACK's reason or return code. */
function connackFrom(source: string, credentials: { username?: string; password?: string }, protocolVersion: 4 | 5 = 5): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(file.broker.ports.mqtt, '127.0.0.1')
    const parser = mqttPacket.parser({ protocolVersion })
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connack') {
        resolve(protocolVersion === 5 ? (packet.reasonCode ?? 0) : (packet.returnCode ?? 0))
        socket.destroy()
      }
    })
    parser.on('error', reject)
    socket.on('data', (chunk) => parser.parse(chunk))
    socket.on('error', reject)
    socket.on('close', () => reject(new Error(`closed without a CONNACK (source ${source})`)))
    socket.setTimeout(15_000, () => socket.destroy())
    const connect = mqttPacket.generate({
      cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, keepalive: 30,
      clientId: `guard-${Math.random().toString(16).slice(2)}`,
      ...(credentials.username !== undefined ? { username: credentials.username } : {}),
      ...(credentials.password !== undefined ? { password: Buffer.from(credentials.password) } : {}),
    })
    socket.write(Buffer.concat([Buffer.from(`PROXY TCP4 ${source} 127.0.0.1 40000 1883\r\n`), connect]))
  })
}

test('a source over connectRatePerAddress is refused with 0x9F while another source connects', async () => {
  const flood = await Promise.all(Array.from({ length: 20 }, () => connackFrom('198.51.100.7', DEVICE).catch(() => -1)))
  assert.ok(flood.filter((code) => code === 0x9f).length >= 10, `most of the burst refused with 0x9F: ${flood.join(',')}`)
  assert.ok(flood.filter((code) => code === 0).length >= 1, 'one second\'s worth is accepted')
  assert.equal(await connackFrom('198.51.100.8', DEVICE), 0, 'another address is not affected')
  assert.ok(await metricValue(await scrapeMetrics(file.broker), 'fleetmq_limit_hits_total', { limit: 'connectRatePerAddress' }) >= 10)
})

test('after failed logins a source waits (0x9F, no password checked) while devices elsewhere log in; the wait ends', async () => {
  const guesser = '203.0.113.9'
  for (let i = 0; i < 3; i++) assert.equal(await connackFrom(guesser, { username: DEVICE.username, password: `guess-${i}` }), 0x86)
  // In its backoff even the right password is refused, and quickly: no hash is computed.
  const started = Date.now()
  assert.equal(await connackFrom(guesser, DEVICE), 0x9f)
  assert.equal(await connackFrom(guesser, DEVICE, 4), 3, '3.1.1: Server unavailable')
  assert.ok(Date.now() - started < 1_000)
  assert.equal(await connackFrom('203.0.113.10', DEVICE), 0, 'a device at another address logs in meanwhile')
  await new Promise((resolve) => setTimeout(resolve, 1_200))
  assert.equal(await connackFrom(guesser, DEVICE), 0, 'after the backoff the right password is accepted')
  const refusal = file.broker.logs.find((l) => /too many failed logins from 203\.0\.113\.9; retry in \d+ s/.test(l.msg))
  assert.ok(refusal, 'the refusal is logged with the address and the wait')
  assert.ok(!JSON.stringify(file.broker.logs).includes('guess-1'), 'no password in the log')
})
