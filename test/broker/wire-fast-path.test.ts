import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { IPublishPacket } from 'mqtt-packet'
import mqtt from 'mqtt'
import { brokerForFile } from '../helpers/fleetmq.js'
import { encode, rawClient } from '../helpers/raw-client.js'
import { runProgram } from '../helpers/program.js'

/*
 * The broker decodes PUBLISH and PUBACK packets itself and encodes the PUBLISH and PUBACK packets
 * it sends (broker/core/wire.ts), and leaves every other packet, and anything unusual, to
 * mqtt-packet. These tests send what a client may legally put in one TCP segment — fast-path
 * packets mixed with others, split at every byte, MQTT 5.0 properties, non-ASCII topics — and check
 * what third-party clients receive. Order is checked per QoS: a QoS 0 message may overtake a QoS 1
 * one published before it (ordering holds per topic and QoS, MQTT 3.1.1 §4.6, 5.0 §4.6), and
 * aedes' QoS 0 path is the shorter one.
 */

const file = brokerForFile({ args: ['--allow-anonymous'] })
let seq = 0
const topicOf = (name: string): string => `wire/${name}-${process.pid}-${++seq}`

const subscriber = async (filter: string, protocolVersion: 4 | 5) => {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${file.port}`, { protocolVersion, reconnectPeriod: 0 })
  const got: { topic: string; payload: string; packet: IPublishPacket }[] = []
  client.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), packet }))
  await client.subscribeAsync(filter, { qos: 1 })
  const waitFor = async (count: number): Promise<typeof got> => {
    const deadline = Date.now() + 10_000
    while (got.length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    return got
  }
  return { client, got, waitFor }
}

test('3.1.1: publishes, a SUBSCRIBE and more publishes in one segment are handled in order', async () => {
  const base = topicOf('mixed')
  const sub = await subscriber(`${base}/#`, 4)
  const raw = await rawClient(file.port, 4)
  await raw.connect({ clientId: `wire-mixed-${process.pid}`, protocolVersion: 4 })
  const segment = Buffer.concat([
    encode({ cmd: 'publish', topic: `${base}/a`, payload: Buffer.from('one'), qos: 1, messageId: 1, retain: false, dup: false }, 4),
    encode({ cmd: 'publish', topic: `${base}/ünïcode/日本`, payload: Buffer.from('two'), qos: 0, retain: false, dup: false }, 4),
    // Its own subscription, between two publishes: the publish after it must reach the publisher.
    encode({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: `${base}/echo`, qos: 1 }] }, 4),
    encode({ cmd: 'publish', topic: `${base}/echo`, payload: Buffer.from('three'), qos: 1, messageId: 3, retain: false, dup: false }, 4),
    // A resend (DUP) of a retained message: delivered, and kept as the topic's retained message.
    encode({ cmd: 'publish', topic: `${base}/r`, payload: Buffer.from('four'), qos: 1, messageId: 4, retain: true, dup: true }, 4),
  ])
  raw.sendRaw(segment)
  const got = await sub.waitFor(4)
  assert.deepEqual(got.filter((m) => m.packet.qos === 1).map((m) => [m.topic, m.payload]), [[`${base}/a`, 'one'], [`${base}/echo`, 'three'], [`${base}/r`, 'four']])
  assert.deepEqual(got.filter((m) => m.packet.qos === 0).map((m) => [m.topic, m.payload]), [[`${base}/ünïcode/日本`, 'two']])
  // A live delivery on 3.1.1 has RETAIN 0 [MQTT-3.3.1-9].
  assert.equal(got.find((m) => m.payload === 'four')?.packet.retain, false)
  const echo = await raw.waitFor('publish', (p) => p.topic === `${base}/echo`)
  assert.equal(echo.payload.toString(), 'three')
  await raw.waitFor('suback', (p) => p.messageId === 2)
  await raw.waitFor('puback', (p) => p.messageId === 4)
  // PUBACKs in the order of their PUBLISH packets [MQTT-4.6.0-2] (a SUBACK may come between).
  assert.deepEqual(raw.received.filter((p) => p.cmd === 'puback').map((p) => p.messageId), [1, 3, 4])
  // The retained copy, as a new subscriber (a third-party client) gets it.
  const retained = await runProgram('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(file.port), '-V', 'mqttv311', '-t', `${base}/r`, '-C', '1', '-W', '5', '-v'], 10_000)
  assert.equal(retained.stdout.trim(), `${base}/r four`)
  raw.destroy()
  await sub.client.endAsync()
})

test('3.1.1: a segment cut at every byte still delivers each message once, in order', async () => {
  const base = topicOf('split')
  const sub = await subscriber(`${base}/+`, 4)
  const raw = await rawClient(file.port, 4)
  await raw.connect({ clientId: `wire-split-${process.pid}`, protocolVersion: 4 })
  const bytes = Buffer.concat(Array.from({ length: 6 }, (_, i) =>
    encode({ cmd: 'publish', topic: `${base}/${i}`, payload: Buffer.alloc(200 + i, 0x61 + i), qos: (i % 2) as 0 | 1, messageId: i + 1, retain: false, dup: false }, 4)))
  for (let at = 0; at < bytes.length; at += 7) {
    raw.sendRaw(bytes.subarray(at, Math.min(at + 7, bytes.length)))
    // A separate segment each time: the broker reads partial packets.
    await new Promise((resolve) => setImmediate(resolve))
  }
  const got = await sub.waitFor(6)
  const expected = Array.from({ length: 6 }, (_, i) => ({ qos: i % 2, entry: [`${base}/${i}`, 200 + i, String.fromCharCode(0x61 + i)] }))
  for (const qos of [0, 1]) {
    assert.deepEqual(got.filter((m) => m.packet.qos === qos).map((m) => [m.topic, m.payload.length, m.payload[0]]),
      expected.filter((e) => e.qos === qos).map((e) => e.entry), `QoS ${qos} messages`)
  }
  raw.destroy()
  await sub.client.endAsync()
})

test('5.0: publishes with and without properties in one segment keep their order and properties', async () => {
  const base = topicOf('props')
  const sub = await subscriber(`${base}/#`, 5)
  const raw = await rawClient(file.port, 5)
  await raw.connect({ clientId: `wire-props-${process.pid}`, protocolVersion: 5 })
  const publish = (n: number, properties?: IPublishPacket['properties']): Buffer =>
    encode({ cmd: 'publish', topic: `${base}/${n}`, payload: Buffer.from(`m${n}`), qos: 1, messageId: n, retain: false, dup: false, properties }, 5)
  raw.sendRaw(Buffer.concat([
    publish(1),
    publish(2, { userProperties: { origin: 'wire-test' }, contentType: 'text/plain' }),
    publish(3),
    // A PUBACK-free QoS 0 publish with a response topic (request/response).
    encode({ cmd: 'publish', topic: `${base}/4`, payload: Buffer.from('m4'), qos: 0, retain: false, dup: false, properties: { responseTopic: `${base}/reply`, correlationData: Buffer.from('c4') } }, 5),
  ]))
  const got = await sub.waitFor(4)
  assert.deepEqual(got.filter((m) => m.packet.qos === 1).map((m) => m.payload), ['m1', 'm2', 'm3'])
  const byPayload = (payload: string) => got.find((m) => m.payload === payload)!.packet
  assert.deepEqual({ ...byPayload('m2').properties?.userProperties }, { origin: 'wire-test' })
  assert.equal(byPayload('m2').properties?.contentType, 'text/plain')
  assert.equal(byPayload('m1').properties?.userProperties, undefined)
  assert.equal(byPayload('m4').properties?.responseTopic, `${base}/reply`)
  assert.equal(byPayload('m4').properties?.correlationData?.toString(), 'c4')
  // A 5.0 PUBACK with nothing to say is the short form: 2 bytes after the fixed header [MQTT-3.4.2.1].
  const acks = await Promise.all([1, 2, 3].map((id) => raw.waitFor('puback', (p) => p.messageId === id)))
  for (const ack of acks) assert.equal(ack.reasonCode ?? 0, 0)
  raw.destroy()
  await sub.client.endAsync()
})

test('malformed publishes in a segment after good ones: the good ones are delivered, the connection is closed', async () => {
  const base = topicOf('bad')
  const sub = await subscriber(`${base}/+`, 4)
  const cases: [string, Buffer][] = [
    // QoS bits 11 [MQTT-3.3.1-4].
    ['QoS 3', Buffer.from([0x36, 0x05, 0x00, 0x01, 0x78, 0x00, 0x01])],
    // A topic length running past the packet.
    ['topic past the end', Buffer.from([0x30, 0x04, 0x00, 0x09, 0x78, 0x79])],
  ]
  for (const [name, bad] of cases) {
    const raw = await rawClient(file.port, 4)
    await raw.connect({ clientId: `wire-bad-${process.pid}`, protocolVersion: 4 })
    raw.sendRaw(Buffer.concat([encode({ cmd: 'publish', topic: `${base}/ok`, payload: Buffer.from(name), qos: 0, retain: false, dup: false }, 4), bad]))
    await raw.closed(5_000)
  }
  const got = await sub.waitFor(2)
  assert.deepEqual(got.map((m) => m.payload), cases.map(([name]) => name))
  // The broker serves everyone else.
  assert.equal(sub.client.connected, true)
  await sub.client.endAsync()
})
