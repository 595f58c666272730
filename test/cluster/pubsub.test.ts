import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { IPublishPacket } from 'mqtt-packet'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { collect, connect, connectCollecting, silentSession, startNodes, stopAll, waitUntil } from './nodes.js'

/* One broker whatever node a client lands on: two nodes on one real Redis. */

let redis: RedisServer
let a: RunningFleetmq
let b: RunningFleetmq

before(async () => {
  redis = await startRedis()
  ;[a, b] = await startNodes(2, { redis: redis.url })
})

after(async () => {
  await stopAll([a, b])
  await stopRedis(redis)
})

for (const qos of [0, 1, 2] as const) {
  test(`QoS ${qos}: a subscriber on node A receives what two publishers on node B send, in order per publisher`, async () => {
    const sub = await connect(a, { protocolVersion: 5 })
    const pubs = await Promise.all([connect(b, { protocolVersion: 5 }), connect(b, { protocolVersion: 4 })])
    try {
      await sub.subscribeAsync(`order${qos}/#`, { qos: 2 })
      const got = collect(sub)
      const count = 100
      // Fired without waiting for each acknowledgement: order must come from the broker path.
      await Promise.all(pubs.flatMap((pub, p) => Array.from({ length: count }, (_, i) => pub.publishAsync(`order${qos}/p${p}`, String(i), { qos }))))
      await waitUntil('every message', () => got.length >= 2 * count, 20_000)
      for (const p of [0, 1]) {
        const mine = got.filter((m) => m.topic === `order${qos}/p${p}`)
        assert.deepEqual(mine.map((m) => Number(m.payload)), Array.from({ length: count }, (_, i) => i), `publisher ${p} in order`)
        assert.ok(mine.every((m) => m.qos === qos), `delivered at QoS ${qos}`)
      }
    } finally {
      await Promise.all([sub, ...pubs].map((c) => c.endAsync()))
    }
  })
}

test('mosquitto_sub on node A receives what mosquitto_pub sends to node B', async () => {
  // No `-C`: on a loaded machine several probes can arrive before the first is seen.
  const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(a.ports.mqtt), '-t', 'mosq/#', '-q', '1', '-v', '-V', 'mqttv311'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  sub.stdout.on('data', (d: Buffer) => { out += d })
  try {
    // mosquitto_sub has subscribed once node A's subscription count shows it.
    await waitUntil('mosquitto_sub subscribed', async () => {
      const probe = await connect(b, { protocolVersion: 4 })
      await probe.publishAsync('mosq/probe', 'ready', { qos: 1 })
      await probe.endAsync()
      return out.includes('mosq/probe ready')
    })
    for (const n of ['1', '2']) {
      const pub = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(b.ports.mqtt), '-t', `mosq/${n}`, '-m', `m${n}`, '-q', '1', '-V', 'mqttv5'], { stdio: 'ignore' })
      const [code] = await once(pub, 'exit')
      assert.equal(code, 0)
    }
    await waitUntil('mosquitto_sub printed both messages', () => /mosq\/1 m1\nmosq\/2 m2/.test(out))
  } finally {
    sub.kill()
  }
})

test('a retained message published on node B is delivered by node A, and cleared from node A', async () => {
  const pub = await connect(b, { protocolVersion: 5 })
  await pub.publishAsync('retained/sensor', '21.5', { qos: 1, retain: true })
  await pub.endAsync()
  const late = await connect(a, { protocolVersion: 4 })
  const got = collect(late)
  await late.subscribeAsync('retained/#', { qos: 1 })
  await waitUntil('the retained message', () => got.length === 1)
  assert.deepEqual(got[0], { topic: 'retained/sensor', payload: '21.5', qos: 1, retain: true })
  // [MQTT-3.3.1-6] an empty retained message clears it, whichever node receives it
  await late.publishAsync('retained/sensor', '', { qos: 1, retain: true })
  await late.endAsync()
  const later = await connect(b, { protocolVersion: 5 })
  const none = collect(later)
  await later.subscribeAsync('retained/#', { qos: 1 })
  await new Promise((resolve) => setTimeout(resolve, 500))
  assert.deepEqual(none, [])
  await later.endAsync()
})

test('on node A, a message from node B goes out at the granted QoS: a retained one at the SUBSCRIBE\'s, a live one at the highest of overlapping subscriptions [MQTT-3.8.4-8, MQTT-3.3.4-2]', async () => {
  const pub = await connect(b, { protocolVersion: 5 })
  await pub.publishAsync('granted/sensor', 'retained', { qos: 1, retain: true })
  const sub = await connect(a, { protocolVersion: 4 })
  const got = collect(sub)
  try {
    await sub.subscribeAsync('granted/+', { qos: 0 })
    await waitUntil('the retained message', () => got.length === 1)
    assert.deepEqual(got[0], { topic: 'granted/sensor', payload: 'retained', qos: 0, retain: true })
    // The topic itself at QoS 0 must not cap what `granted/#` at QoS 1 takes.
    await sub.subscribeAsync('granted/sensor', { qos: 0 })
    await waitUntil('the retained message for granted/sensor', () => got.length === 2)
    await sub.subscribeAsync('granted/#', { qos: 1 })
    await waitUntil('the retained message for granted/#', () => got.length === 3)
    assert.deepEqual(got.slice(1).map((m) => m.qos), [0, 1], 'again for granted/sensor at 0, for granted/# at 1')
    await pub.publishAsync('granted/sensor', 'live', { qos: 1 })
    await waitUntil('the live message', () => got.length === 4)
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.deepEqual(got.slice(3), [{ topic: 'granted/sensor', payload: 'live', qos: 1, retain: false }])
  } finally {
    await pub.publishAsync('granted/sensor', '', { qos: 1, retain: true })
    await Promise.all([pub.endAsync(), sub.endAsync()])
  }
})

test('a persistent session resumed on node B gets the QoS 1 message it left unacknowledged on node A again, same packet identifier, DUP 1 [MQTT-4.4.0-1, MQTT-3.3.1-1]', async () => {
  const clientId = `resume-dup-${process.pid}`
  const first = await rawConnect(a.ports.mqtt, { clientId, clean: false }, 4)
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'dup/sensor', qos: 1 }] })
  await first.waitFor((p) => p.cmd === 'suback')
  const pub = await connect(b, { protocolVersion: 4 })
  try {
    await pub.publishAsync('dup/sensor', 'unacknowledged', { qos: 1 })
    const delivered = await first.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
    assert.equal(delivered.dup, false)
    // No PUBACK: the connection drops with the message in flight.
    first.destroy()
    await first.closed
    const second = await rawConnect(b.ports.mqtt, { clientId, clean: false }, 4)
    const again = await second.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
    assert.deepEqual([again.payload.toString(), again.messageId, again.dup], ['unacknowledged', delivered.messageId, true])
    second.send({ cmd: 'puback', messageId: again.messageId })
    second.send({ cmd: 'disconnect' })
    await second.closed
    const last = await rawConnect(b.ports.mqtt, { clientId, clean: true }, 4)
    last.send({ cmd: 'disconnect' })
  } finally {
    await pub.endAsync()
  }
})

test('the will of a client that drops off node A reaches a subscriber on node B', async () => {
  const watcher = await connect(b, { protocolVersion: 5 })
  const got = collect(watcher)
  await watcher.subscribeAsync('wills/#', { qos: 1 })
  const device = await connect(a, { protocolVersion: 4, clientId: 'will-device', will: { topic: 'wills/will-device', payload: Buffer.from('offline'), qos: 1, retain: false } })
  // A network failure, not a DISCONNECT: the will is published [MQTT-3.1.2-8].
  device.stream.destroy()
  await waitUntil('the will', () => got.length === 1)
  assert.deepEqual(got[0], { topic: 'wills/will-device', payload: 'offline', qos: 1, retain: false })
  device.end(true)
  await watcher.endAsync()
})

test('a delayed will is cancelled when the client resumes its session on the other node within the delay', async () => {
  const watcher = await connect(b, { protocolVersion: 5 })
  const got = collect(watcher)
  await watcher.subscribeAsync('dwills/#', { qos: 1 })
  const session = { protocolVersion: 5 as const, clientId: 'delayed-will', clean: false, properties: { sessionExpiryInterval: 60 } }
  const first = await connect(a, { ...session, will: { topic: 'dwills/delayed-will', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 2 } } })
  first.stream.destroy()
  first.end(true)
  // [MQTT-3.1.3-9] reconnecting before the Will Delay Interval passes cancels the will.
  const second = await connect(b, session)
  await new Promise((resolve) => setTimeout(resolve, 3_500))
  assert.deepEqual(got, [])
  await Promise.all([second.endAsync(), watcher.endAsync()])
})

test('session takeover across nodes: the old 5.0 connection gets 0x8E, the new one resumes the unacknowledged messages', async () => {
  // The old connection acknowledges nothing: its messages stay in flight in Redis.
  const old = await silentSession(a, 'takeover-1', 'takeover/#')
  const pub = await connect(b, { protocolVersion: 5 })
  for (let i = 0; i < 5; i++) await pub.publishAsync('takeover/x', `m${i}`, { qos: 1 })
  await waitUntil('the old connection got the messages', () => old.publishes.length === 5)
  const { client: fresh, got: resumed } = await connectCollecting(b, { protocolVersion: 5, clientId: 'takeover-1', clean: false, properties: { sessionExpiryInterval: 600 }, resubscribe: false })
  assert.equal(await old.disconnect, 0x8e, 'Session taken over [MQTT-3.1.4-3]')
  await old.closed
  for (let i = 5; i < 8; i++) await pub.publishAsync('takeover/x', `m${i}`, { qos: 1 })
  await waitUntil('every message on the new connection', () => new Set(resumed.map((m) => m.payload)).size === 8)
  const order = [...new Set(resumed.map((m) => m.payload))]
  // Resent messages keep their order [MQTT-4.6.0-1]; live ones may overtake the resumed queue.
  assert.deepEqual(order.filter((m) => Number(m.slice(1)) < 5), ['m0', 'm1', 'm2', 'm3', 'm4'])
  assert.deepEqual(order.filter((m) => Number(m.slice(1)) >= 5), ['m5', 'm6', 'm7'])
  await Promise.all([fresh.endAsync(), pub.endAsync()])
})
