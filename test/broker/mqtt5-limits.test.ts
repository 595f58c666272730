import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import type { Packet } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { encode, rawClient, type RawClient } from '../helpers/raw-client.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'
import { runProgram as run } from '../helpers/program.js'
import { runPaho } from '../helpers/paho.js'

/*
 * The node's own Receive Maximum (§3.2.2.3.3, §3.3.4, 0x93) and the topic limits answered with
 * their reason codes (SUBACK/UNSUBACK 0x8F, DISCONNECT 0x90), on the real `fleetmq start` with
 * small limits, against raw clients (bursts no library sends), MQTT.js and mosquitto's clients.
 */

const RECEIVE_MAXIMUM = 3
const MAX_TOPIC_LEVELS = 4
const MAX_TOPIC_LENGTH = 32

let broker: RunningFleetmq
let port: number
let seq = 0
const id = (name: string): string => `${name}-${process.pid}-${++seq}`
const open: RawClient[] = []

before(async () => {
  broker = await startFleetmq({
    users: [METRICS_ADMIN],
    config: {
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      limits: { receiveMaximum: RECEIVE_MAXIMUM, maxTopicLevels: MAX_TOPIC_LEVELS, maxTopicLength: MAX_TOPIC_LENGTH },
    },
  })
  port = broker.ports.mqtt
})
after(async () => {
  for (const client of open) client.destroy()
  assert.equal(await broker.stop(), 0)
})

async function connected(version: 4 | 5): Promise<RawClient> {
  const client = await rawClient(port, version)
  open.push(client)
  const connack = await client.connect({ clientId: id(`raw${version}`) })
  assert.equal(version === 5 ? connack.reasonCode : connack.returnCode, 0)
  return client
}

/** The connection still answers: a PINGREQ gets its PINGRESP. */
async function assertAlive(client: RawClient): Promise<void> {
  const before = client.received.filter((p) => p.cmd === 'pingresp').length
  client.send({ cmd: 'pingreq' })
  await client.waitForPacket((p) => p.cmd === 'pingresp' && client.received.filter((q) => q.cmd === 'pingresp').length > before)
}

const publish = (topic: string, qos: 0 | 1 | 2, messageId?: number): Packet =>
  ({ cmd: 'publish', topic, payload: Buffer.from('m'), qos, messageId, retain: false, dup: false }) as Packet

test('CONNACK advertises limits.receiveMaximum to 5.0 clients [§3.2.2.3.3]', async () => {
  const client = await rawClient(port, 5)
  open.push(client)
  const connack = await client.connect({ clientId: id('rm-connack') })
  assert.equal(connack.properties?.receiveMaximum, RECEIVE_MAXIMUM)
  // MQTT.js sees the same value.
  const js = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  const packet = await new Promise<mqtt.IConnackPacket>((resolve) => js.once('connect', resolve))
  assert.equal(packet.properties?.receiveMaximum, RECEIVE_MAXIMUM)
  await js.endAsync()
  // 3.1.1 has no properties: its CONNACK is unchanged.
  const v4 = await rawClient(port, 4)
  open.push(v4)
  assert.deepEqual(await v4.connect({ clientId: id('rm-connack4') }).then((c) => [c.returnCode, c.properties]), [0, undefined])
})

test('more QoS 2 PUBLISH packets without PUBREL than the Receive Maximum: DISCONNECT 0x93 with a reason [§3.3.4, MQTT-3.3.4-7]', async () => {
  const client = await connected(5)
  const topic = `rm/${id('burst')}`
  for (let i = 1; i <= RECEIVE_MAXIMUM + 1; i++) client.send(publish(topic, 2, i))
  const disconnect = await client.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, 0x93)
  assert.match(String(disconnect.properties?.reasonString), new RegExp(`${RECEIVE_MAXIMUM + 1} QoS 1/2 PUBLISH packets unacknowledged, the Receive Maximum is ${RECEIVE_MAXIMUM} \\(limits\\.receiveMaximum\\)`))
  await client.closed()
  // PUBRECs of the first ones may or may not have been written by then (aedes stores QoS 2
  // messages asynchronously); nothing follows the DISCONNECT [MQTT-3.14.4-1].
  assert.equal(client.received.at(-1)?.cmd, 'disconnect')
  await broker.waitForLog((l) => l.limit === 'receiveMaximum' && /limits\.receiveMaximum/.test(l.msg))
  assert.ok(metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'receiveMaximum' }) >= 1)
})

test('the quota comes back with each PUBCOMP: a client that completes its QoS 2 flows is never cut', async () => {
  const client = await connected(5)
  const topic = `rm/${id('flows')}`
  let next = 1
  for (let round = 0; round < 3; round++) {
    const ids = Array.from({ length: RECEIVE_MAXIMUM }, () => next++)
    for (const messageId of ids) client.send(publish(topic, 2, messageId))
    for (const messageId of ids) await client.waitFor('pubrec', (p) => p.messageId === messageId)
    for (const messageId of ids) client.send({ cmd: 'pubrel', messageId })
    for (const messageId of ids) await client.waitFor('pubcomp', (p) => p.messageId === messageId)
  }
  // A resent PUBLISH (same identifier, DUP) takes no second place in the quota.
  for (let i = 0; i < RECEIVE_MAXIMUM + 2; i++) client.send({ ...publish(topic, 2, next), dup: i > 0 } as Packet)
  await assertAlive(client)
  assert.equal(client.received.filter((p) => p.cmd === 'disconnect').length, 0)
})

test('a burst of QoS 1 in the 3.1.1 form (the broker\'s own path: paced at the Receive Maximum) and of QoS 0 is never refused; 3.1.1 clients have no Receive Maximum', async () => {
  const topic = `rm/${id('qos01')}`
  // A subscriber, so that each publish takes a while: its PUBACK waits for the delivery.
  const sub = await connected(5)
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] } as Packet)
  await sub.waitFor('suback')

  const v5 = await connected(5)
  // One read each: every PUBLISH is read before the first PUBACK can be written.
  v5.sendRaw(Buffer.concat(Array.from({ length: 50 }, (_, i) => encode(publish(topic, 1, i + 1), 5))))
  v5.sendRaw(Buffer.concat(Array.from({ length: 50 }, () => encode(publish(topic, 0), 5))))
  await v5.waitFor('puback', (p) => p.messageId === 50)
  await assertAlive(v5)

  const v4 = await connected(4)
  for (let i = 1; i <= RECEIVE_MAXIMUM * 3; i++) v4.send(publish(topic, 2, i))
  await v4.waitFor('pubrec', (p) => p.messageId === RECEIVE_MAXIMUM * 3)
  await assertAlive(v4)
})

test('QoS 1 PUBLISH packets on the broker\'s own path count toward the Receive Maximum: with the quota held by open QoS 2 flows, one more QoS 1 gets DISCONNECT 0x93 and no PUBACK', async () => {
  const topic = `rm/${id('own-path')}`
  const client = await connected(5)
  for (let i = 1; i <= RECEIVE_MAXIMUM; i++) client.send(publish(topic, 2, i))
  await client.waitFor('pubrec', (p) => p.messageId === RECEIVE_MAXIMUM)
  // The 3.1.1 form (no properties): the PUBLISH the broker handles itself, which used to be uncounted.
  client.send(publish(topic, 1, 100))
  assert.equal((await client.waitFor('disconnect')).reasonCode, 0x93)
  await client.closed()
  assert.equal(client.received.filter((p) => p.cmd === 'puback').length, 0, 'no PUBACK for the PUBLISH over the limit')
})

test('a QoS 1 burst over the Receive Maximum from MQTT.js (which ignores it) is paced, not refused: every message acknowledged and delivered in order', async () => {
  const topic = `rm/${id('mqttjs-burst')}`
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  await sub.subscribeAsync(topic, { qos: 1 })
  const received: string[] = []
  const all = new Promise<void>((resolve) => sub.on('message', (_t, payload) => { if (received.push(payload.toString()) === 150) resolve() }))
  const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  let disconnected: number | undefined
  pub.on('disconnect', (packet) => { disconnected = packet.reasonCode })
  await Promise.all(Array.from({ length: 150 }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })))
  await all
  assert.equal(disconnected, undefined)
  assert.deepEqual(received, Array.from({ length: 150 }, (_, i) => String(i)))
  await pub.endAsync()
  await sub.endAsync()
})

test('Paho (Python) publishing 20 QoS 1 messages with 20 in flight, over the Receive Maximum 3: all delivered, no disconnect', async () => {
  const topic = `rm/${id('paho-burst')}`
  const paho = runPaho({ port, version: 5, subscribe: [[topic, 1]], maxInflight: 20, publish: Array.from({ length: 20 }, (_, i) => ({ topic, payload: `p${i}`, qos: 1 as const })), expect: 20, timeout: 20 })
  const events = await paho.finished
  assert.deepEqual(events.filter((e) => e.event === 'message').map((e) => e.payload), Array.from({ length: 20 }, (_, i) => `p${i}`))
  assert.equal(events.find((e) => e.event === 'error'), undefined, JSON.stringify(events))
  assert.equal(events.find((e) => e.event === 'disconnect' && (e.reasonCode ?? 0) !== 0), undefined, JSON.stringify(events))
})

test('PUBLISH packets sent with the CONNECT count: more than the Receive Maximum get DISCONNECT 0x93 right after the CONNACK', async () => {
  const topic = `rm/${id('early')}`
  const client = await rawClient(port, 5)
  open.push(client)
  const connect = encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: id('early'), clean: true, keepalive: 60 } as Packet, 5)
  client.sendRaw(Buffer.concat([connect, ...Array.from({ length: RECEIVE_MAXIMUM + 1 }, (_, i) => encode(publish(topic, 2, i + 1), 5))]))
  assert.equal((await client.waitFor('connack')).reasonCode, 0)
  assert.equal((await client.waitFor('disconnect')).reasonCode, 0x93)
  await client.closed()
  // Up to the Receive Maximum with the CONNECT is fine.
  const within = await rawClient(port, 5)
  open.push(within)
  within.sendRaw(Buffer.concat([encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: id('early-ok'), clean: true, keepalive: 60 } as Packet, 5),
    ...Array.from({ length: RECEIVE_MAXIMUM }, (_, i) => encode(publish(topic, 2, i + 1), 5))]))
  await within.waitFor('pubrec', (p) => p.messageId === RECEIVE_MAXIMUM)
  await assertAlive(within)
})

test('mosquitto_pub honours the advertised Receive Maximum: 20 QoS 2 messages in a row all arrive', async () => {
  const topic = `rm/${id('mosq')}`
  const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  await sub.subscribeAsync(topic, { qos: 2 })
  let received = 0
  const all = new Promise<void>((resolve) => sub.on('message', () => { if (++received === 20) resolve() }))
  const pub = await run('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-t', topic, '-q', '2', '-m', 'x', '--repeat', '20'])
  assert.equal(pub.code, 0, pub.stderr)
  await all
  await sub.endAsync()
})

test('SUBSCRIBE: a filter over maxTopicLevels or maxTopicLength gets 0x8F Topic Filter invalid, the others are granted [§3.9.3]', async () => {
  const client = await connected(5)
  const base = id('sf')
  const deep = `${base}/b/c/d/e`
  const long = `${base}/${'x'.repeat(MAX_TOPIC_LENGTH)}`
  client.send({
    cmd: 'subscribe',
    messageId: 7,
    subscriptions: [
      { topic: deep, qos: 1 },
      { topic: `${base}/ok`, qos: 1 },
      { topic: long, qos: 0 },
      // Routed as $fleetmq/share/g/<filter>: 1 filter level + 3 fits, 2 + 3 do not.
      { topic: `$share/g/${base}/a`, qos: 1 },
      { topic: `$share/g/${base}`, qos: 1 },
    ],
  } as Packet)
  const suback = await client.waitFor('suback')
  assert.deepEqual(suback.granted, [0x8F, 1, 0x8F, 0x8F, 1])
  assert.equal(suback.properties?.reasonString, 'invalid topic filter')
  await assertAlive(client)
  await broker.waitForLog((l) => l.limit === 'maxTopicLevels' && /topic filter of 5 levels is more than 4 \(limits\.maxTopicLevels\)/.test(l.msg))

  // The granted subscription works.
  const pub = await connected(5)
  pub.send(publish(`${base}/ok`, 1, 1))
  const message = await client.waitFor('publish')
  assert.equal(message.topic, `${base}/ok`)

  // UNSUBSCRIBE of a filter no subscription can have: 0x8F, the rest as usual [§3.11.3].
  client.send({ cmd: 'unsubscribe', messageId: 8, unsubscriptions: [deep, `${base}/ok`] } as Packet)
  const unsuback = await client.waitFor('unsuback')
  assert.deepEqual(unsuback.granted, [0x8F, 0])
  await assertAlive(client)

  // MQTT.js names the reason code.
  const js = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  await assert.rejects(js.subscribeAsync(deep, { qos: 1 }), /Topic Filter invalid/)
  await js.endAsync()
})

test('SUBSCRIBE from 3.1.1: 0x80 Failure for such a filter, the connection stays', async () => {
  const client = await connected(4)
  const base = id('sf4')
  client.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: `${base}/b/c/d/e`, qos: 1 }, { topic: `${base}/ok`, qos: 2 }] } as Packet)
  assert.deepEqual((await client.waitFor('suback')).granted, [0x80, 2])
  client.send({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: [`${base}/b/c/d/e`] } as Packet)
  await client.waitFor('unsuback', (p) => p.messageId === 4)
  await assertAlive(client)
})

test('mosquitto_sub is told its filter is refused with 0x8F (143)', async () => {
  const result = await run('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-t', `${id('mosq')}/b/c/d/e`, '-E', '-d'])
  assert.match(result.stdout, /Subscribed \(mid: 1\): 143/)
  assert.match(result.stderr, /All subscription requests were denied/)
})

test('PUBLISH to a topic over maxTopicLevels: DISCONNECT 0x90 Topic Name invalid (5.0), closed connection (3.1.1); nothing routed', async () => {
  // Logs are throttled to one line per limit per second: let the refusals above age out.
  await sleep(1_100)
  const base = id('pl')
  const watcher = await connected(5)
  watcher.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/#`, qos: 0 }] } as Packet)
  await watcher.waitFor('suback')

  const v5 = await connected(5)
  v5.send(publish(`${base}/b/c/d/e`, 1, 9))
  const disconnect = await v5.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, 0x90)
  assert.equal(disconnect.properties?.reasonString, 'topic name of 5 levels is more than 4 (limits.maxTopicLevels)')
  await v5.closed()
  assert.equal(v5.received.at(-1)?.cmd, 'disconnect', 'no PUBACK after the DISCONNECT [MQTT-3.14.4-1]')

  const v4 = await connected(4)
  v4.send(publish(`${base}/b/c/d/e`, 0))
  await v4.closed()

  await broker.waitForLog((l) => l.limit === 'maxTopicLevels' && /topic name with more than 4 levels/.test(l.msg))
  assert.ok(metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'maxTopicLevels' }) >= 2)
  await assertAlive(watcher)
  assert.equal(watcher.received.filter((p) => p.cmd === 'publish').length, 0)
})
