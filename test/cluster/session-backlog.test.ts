import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { redisCli } from '../helpers/redis.js'
import { clusterWithRedis, waitUntil } from './nodes.js'

/*
 * No PUBACKed QoS 1 message to a persistent session may be lost (found with kill -9 of a node
 * under QoS 1 traffic, test/cluster/node-failure.test.ts):
 * - a session that kept more messages than `limits.maxQueued` while its client was away gets every
 *   one of them when it resumes (it used to get the first 1,001, and a disconnection for being over
 *   `maxQueued` while they were resent);
 * - a PUBACK means the message is stored: a node that dies before it could store a message has not
 *   acknowledged it, and the publisher resends it elsewhere [MQTT-4.3.2-4].
 */

const { nodes, redis } = clusterWithRedis(2)

const session = (port: number, clientId: string, extra: mqtt.IClientOptions = {}) =>
  mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 0, connectTimeout: 20_000, ...extra })

test('a persistent session that kept 1,500 QoS 1 messages (more than limits.maxQueued) gets every one when it resumes', async (t) => {
  const [a, b] = nodes
  const COUNT = 1_500
  const first = session(a.ports.mqtt, 'backlog-sub')
  await new Promise((resolve) => first.once('connect', resolve))
  await first.subscribeAsync('backlog/#', { qos: 1 })
  await first.endAsync()

  // Published on the other node while the subscriber is away: all PUBACKed.
  const pub = await mqtt.connectAsync({ host: '127.0.0.1', port: b.ports.mqtt, protocolVersion: 5, clientId: 'backlog-pub', reconnectPeriod: 0, connectTimeout: 20_000 })
  t.after(() => { pub.end(true) })
  await Promise.all(Array.from({ length: COUNT }, (_, i) => pub.publishAsync('backlog/seq', String(i), { qos: 1 })))

  const sub = session(a.ports.mqtt, 'backlog-sub')
  t.after(() => { sub.end(true) })
  const got = new Set<number>()
  const disconnects: number[] = []
  sub.on('message', (_topic, payload) => got.add(Number(payload)))
  sub.on('disconnect', (packet) => disconnects.push(packet.reasonCode ?? 0))
  await waitUntil(`all ${COUNT} messages delivered`, () => got.size === COUNT || (disconnects.length > 0 && sub.disconnected), 45_000).catch(() => undefined)
  const missing = Array.from({ length: COUNT }, (_, i) => i).filter((i) => !got.has(i))
  t.diagnostic(`delivered ${got.size} of ${COUNT}; DISCONNECT reason codes ${JSON.stringify(disconnects)}`)
  assert.deepEqual(disconnects, [], 'the resumed session is not disconnected (0x97 Quota exceeded) for its own backlog')
  assert.equal(missing.length, 0, `missing ${missing.length}, from ${missing[0]} to ${missing.at(-1)}`)
  await sub.endAsync()
})

test('no PUBACK before the message is stored: kill -9 of the node that could not store it loses nothing', async (t) => {
  const [a, b] = nodes
  const sub = session(a.ports.mqtt, 'ownership-sub')
  const got: string[] = []
  sub.on('message', (_topic, payload) => got.push(payload.toString()))
  t.after(() => { sub.end(true) })
  await new Promise((resolve) => sub.once('connect', resolve))
  await sub.subscribeAsync('ownership/#', { qos: 1 })

  const pub = mqtt.connect({ servers: [{ host: '127.0.0.1', port: b.ports.mqtt }, { host: '127.0.0.1', port: a.ports.mqtt }], protocolVersion: 5, clientId: 'ownership-pub', clean: false, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 300, connectTimeout: 5_000 })
  t.after(() => { pub.end(true) })
  await new Promise((resolve) => pub.once('connect', resolve))

  // Redis holds every write for 4 s: node B cannot store the message for the persistent session.
  await redisCli(redis().port, 'CLIENT', 'PAUSE', '4000', 'WRITE')
  let acked = false
  const publishing = pub.publishAsync('ownership/x', 'owned', { qos: 1 }).then(() => { acked = true })
  await new Promise((resolve) => setTimeout(resolve, 1_500))
  const ackedBeforeStored = acked
  await b.stop('SIGKILL')
  assert.equal(ackedBeforeStored, false, 'PUBACK only once the message is stored [MQTT-4.3.2-4]')

  // The publisher resends it to node A once Redis takes writes again; the subscriber gets it.
  await publishing
  await waitUntil('the message delivered', () => got.includes('owned'), 20_000)
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('a persistent subscriber gets every QoS 1 message while QoS 0 messages to it are published at the same time', async (t) => {
  /*
   * aedes drops a message whose counter is below the last one a client got, as a second copy of
   * it; a QoS 1 message waits for its copy in Redis before it is routed, and a QoS 0 message
   * published meanwhile was routed first, so the QoS 1 message was dropped for that subscriber.
   */
  const [a] = nodes
  const COUNT = 300
  const sub = session(a.ports.mqtt, 'interleave-sub')
  await new Promise((resolve) => sub.once('connect', resolve))
  const got = new Set<string>()
  let qos0 = 0
  sub.on('message', (topic, payload) => {
    if (topic === 'interleave/q1') got.add(payload.toString())
    else qos0++
  })
  await sub.subscribeAsync('interleave/#', { qos: 1 })
  const [p1, p0] = await Promise.all([
    mqtt.connectAsync({ host: '127.0.0.1', port: a.ports.mqtt, protocolVersion: 4, reconnectPeriod: 0 }),
    mqtt.connectAsync({ host: '127.0.0.1', port: a.ports.mqtt, protocolVersion: 4, reconnectPeriod: 0 }),
  ])
  const stopQos0 = setInterval(() => { for (let i = 0; i < 20; i++) p0.publish('interleave/q0', 'x', { qos: 0 }) }, 1)
  try {
    for (let i = 0; i < COUNT; i++) {
      await p1.publishAsync('interleave/q1', String(i), { qos: 1 })
    }
  } finally {
    clearInterval(stopQos0)
  }
  await waitUntil('every QoS 1 message delivered', () => got.size === COUNT, 15_000).catch(() => undefined)
  t.diagnostic(`QoS 1: ${got.size} of ${COUNT} delivered, with ${qos0} QoS 0 messages interleaved`)
  assert.equal(got.size, COUNT, 'every PUBACKed QoS 1 message reaches the persistent subscriber')
  await Promise.all([p1.endAsync(), p0.endAsync(), sub.endAsync()])
})
