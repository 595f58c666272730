import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { encode, rawClient, type RawClient } from '../helpers/raw-client.js'

/*
 * Bad input on raw sockets: each offender is disconnected (a 5.0 one with DISCONNECT and the
 * reason code), and the process and a bystander that keeps publishing and receiving are unaffected.
 */

let broker: RunningFleetmq
let bystander: mqtt.MqttClient
let bystanderReceived = 0

before(async () => {
  broker = await startFleetmq({
    config: { allowAnonymous: true, listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], limits: { maxPacketSize: 4096 } },
  })
  bystander = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { protocolVersion: 5, clientId: 'bystander', reconnectPeriod: 0 })
  await bystander.subscribeAsync('bystander/#', { qos: 1 })
  bystander.on('message', () => { bystanderReceived++ })
})

after(async () => {
  await bystander.endAsync()
  assert.equal(await broker.stop(), 0)
})

/** The bystander still round-trips a message, and the broker process is running. */
async function assertUnaffected(): Promise<void> {
  assert.equal(broker.process.exitCode, null)
  const before = bystanderReceived
  await bystander.publishAsync('bystander/ping', 'ping', { qos: 1 })
  const deadline = Date.now() + 10_000
  while (bystanderReceived === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  assert.ok(bystanderReceived > before, 'the bystander still receives its own messages')
  assert.equal(bystander.connected, true)
}

async function connected(version: 4 | 5 = 5): Promise<RawClient> {
  const client = await rawClient(broker.ports.mqtt, version)
  const ack = await client.connect()
  assert.equal(version === 5 ? ack.reasonCode : ack.returnCode, 0)
  return client
}

/** Waits for the DISCONNECT a 5.0 client is sent, then for the connection to close. */
async function disconnectedWith(client: RawClient, reasonCode: number, reason: RegExp): Promise<void> {
  const disconnect = await client.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, reasonCode, `reason code 0x${disconnect.reasonCode?.toString(16)}: ${disconnect.properties?.reasonString}`)
  assert.match(String(disconnect.properties?.reasonString), reason)
  await client.closed()
}

const publishBytes = (topic: Buffer, payload = Buffer.from('x')): Buffer => {
  // PUBLISH QoS 0, v5: topic length, topic, property length 0, payload.
  const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([0]), payload])
  return Buffer.concat([Buffer.from([0x30, body.length]), body])
}

test('a truncated packet (topic length beyond the packet) gets DISCONNECT 0x81 Malformed Packet', async () => {
  const client = await connected()
  // Remaining length 4, but the topic claims 100 bytes.
  client.sendRaw(Buffer.from([0x30, 0x04, 0x00, 0x64, 0x61, 0x62]))
  await disconnectedWith(client, 0x81, /malformed packet/)
  await assertUnaffected()
})

test('a CONNECT cut short and the socket half-closed: the connection is closed, no CONNACK', async () => {
  const client = await rawClient(broker.ports.mqtt, 4)
  const connect = encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'cut-short', clean: true, keepalive: 30 }, 4)
  client.sendRaw(connect.subarray(0, 8))
  client.socket.end()
  await client.closed()
  assert.deepEqual(client.received, [])
  await assertUnaffected()
})

test('remaining length above maxPacketSize gets DISCONNECT 0x95 Packet too large before the body arrives', async () => {
  const client = await connected()
  // Fixed header only: PUBLISH with remaining length 100000 (VBI a0 8d 06).
  client.sendRaw(Buffer.from([0x30, 0xa0, 0x8d, 0x06]))
  const disconnect = await client.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, 0x95)
  await client.closed()
  await broker.waitForLog((l) => l.limit === 'maxPacketSize' && /above limits\.maxPacketSize \(4096\)/.test(l.msg))
  await assertUnaffected()
})

test('a remaining length of five bytes (an invalid Variable Byte Integer) gets DISCONNECT 0x81', async () => {
  const client = await connected()
  client.sendRaw(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))
  await disconnectedWith(client, 0x81, /malformed packet/)
  await assertUnaffected()
})

test('invalid UTF-8 in a PUBLISH topic gets DISCONNECT 0x81 and the message goes nowhere', async () => {
  const client = await connected()
  client.sendRaw(publishBytes(Buffer.from([0x62, 0x79, 0x73, 0x74, 0x61, 0x6e, 0x64, 0x65, 0x72, 0x2f, 0xc3, 0x28])))
  await disconnectedWith(client, 0x81, /not valid UTF-8/)
  const v4 = await connected(4)
  v4.sendRaw(encode({ cmd: 'publish', topic: 'x', payload: Buffer.from('y'), qos: 0, retain: false, dup: false }, 4).fill(0xff, 4, 5))
  await v4.closed()
  await assertUnaffected()
})

test('a wildcard in a PUBLISH topic gets DISCONNECT 0x82 Protocol Error [MQTT-3.3.2-2]', async () => {
  const client = await connected()
  const before = bystanderReceived
  client.send({ cmd: 'publish', topic: 'bystander/#', payload: Buffer.from('x'), qos: 0, retain: false, dup: false })
  await disconnectedWith(client, 0x82, /wildcard in the PUBLISH topic/)
  const v4 = await connected(4)
  v4.send({ cmd: 'publish', topic: 'bystander/+', payload: Buffer.from('x'), qos: 0, retain: false, dup: false })
  await v4.closed()
  assert.equal(bystanderReceived, before, 'nothing was delivered to the subscribers of bystander/#')
  await assertUnaffected()
})

test('a second CONNECT gets DISCONNECT 0x82 Protocol Error [MQTT-3.1.0-2]', async () => {
  const client = await connected()
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'again', clean: true, keepalive: 30 })
  await disconnectedWith(client, 0x82, /second CONNECT/)
  const v4 = await connected(4)
  v4.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'again-v4', clean: true, keepalive: 30 })
  await v4.closed()
  await assertUnaffected()
})

test('an unknown packet type (reserved type 0) gets DISCONNECT 0x81', async () => {
  const client = await connected()
  client.sendRaw(Buffer.from([0x00, 0x00]))
  await disconnectedWith(client, 0x81, /malformed packet/)
  const v4 = await connected(4)
  v4.sendRaw(Buffer.from([0x00, 0x00]))
  await v4.closed()
  await assertUnaffected()
})

test('garbage instead of a CONNECT closes the connection', async () => {
  const client = await rawClient(broker.ports.mqtt, 5)
  client.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  await client.closed()
  await assertUnaffected()
})
