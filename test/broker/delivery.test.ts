import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import mqtt from 'mqtt'
import { brokerForFile } from '../helpers/fleetmq.js'
import { rawConnect } from '../helpers/raw-mqtt.js'

/*
 * Delivery as a subscriber sees it, for any change to the delivery path (a faster one is the open
 * latency work in docs/bench.md): order within a burst, the packet identifier a persistent session
 * keeps across a reconnect, No Local, one copy for overlapping subscriptions, never above the QoS
 * published.
 */

const file = brokerForFile({ args: ['--allow-anonymous'] })
let seq = 0
const topicOf = (name: string): string => `fp/${name}-${process.pid}-${++seq}`
const isPublish = (p: Packet): p is IPublishPacket => p.cmd === 'publish'

const connect = (options: mqtt.IClientOptions = {}) => mqtt.connectAsync(`mqtt://127.0.0.1:${file.port}`, { reconnectPeriod: 0, ...options })

test('500 QoS 1 messages published in one burst arrive once each, in order', async () => {
  const topic = topicOf('order')
  const sub = await connect({ protocolVersion: 4 })
  const pub = await connect({ protocolVersion: 4 })
  const got: number[] = []
  sub.on('message', (_t, payload) => got.push(Number(payload.toString())))
  await sub.subscribeAsync(topic, { qos: 1 })
  await Promise.all(Array.from({ length: 500 }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })))
  const deadline = Date.now() + 20_000
  while (got.length < 500 && Date.now() < deadline) await sleep(20)
  await sleep(200)
  assert.deepEqual(got, Array.from({ length: 500 }, (_, i) => i))
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

for (const version of [4, 5] as const) {
  test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: a persistent session gets an unacknowledged QoS 1 message again after a reconnect, same packet identifier [MQTT-4.4.0-1]`, async () => {
    const topic = topicOf(`resend${version}`)
    const clientId = `fp-resend-${version}-${process.pid}-${seq}`
    const session = version === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false }
    const first = await rawConnect(file.port, { clientId, ...session }, version)
    first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
    await first.waitFor((p) => p.cmd === 'suback')
    const pub = await connect({ protocolVersion: version })
    await pub.publishAsync(topic, 'kept', { qos: 1 })
    const delivered = await first.waitFor<IPublishPacket>((p) => isPublish(p) && p.topic === topic)
    assert.equal(delivered.qos, 1)
    // No PUBACK: the connection drops with the message in flight.
    first.destroy()
    await first.closed
    await sleep(200)
    await pub.publishAsync(topic, 'queued', { qos: 1 })
    const second = await rawConnect(file.port, { clientId, ...session }, version)
    const again = await second.waitFor<IPublishPacket>((p) => isPublish(p) && p.topic === topic)
    const queued = await second.waitFor<IPublishPacket>((p) => isPublish(p) && p.topic === topic && p.payload.toString() === 'queued')
    assert.equal(queued.dup, false, 'a message queued while the client was away is a first delivery')
    second.send({ cmd: 'puback', messageId: queued.messageId })
    assert.equal(again.payload.toString(), 'kept')
    assert.equal(again.messageId, delivered.messageId)
    assert.equal(delivered.dup, false)
    assert.equal(again.dup, true, 'a re-delivery carries DUP 1 [MQTT-3.3.1-1]')
    second.send({ cmd: 'puback', messageId: again.messageId })
    second.send({ cmd: 'disconnect', ...(version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}) })
    await pub.endAsync()
  })
}

test('MQTT 5.0 No Local: a client subscribed with noLocal does not get its own messages; another subscriber does [MQTT-3.8.3-3]', async () => {
  const topic = topicOf('nolocal')
  const self = await connect({ protocolVersion: 5 })
  const other = await connect({ protocolVersion: 5 })
  const selfGot: string[] = []
  const otherGot: string[] = []
  self.on('message', (_t, p) => selfGot.push(p.toString()))
  other.on('message', (_t, p) => otherGot.push(p.toString()))
  await self.subscribeAsync(topic, { qos: 1, nl: true })
  await other.subscribeAsync(topic, { qos: 1 })
  for (const qos of [0, 1] as const) await self.publishAsync(topic, `own-${qos}`, { qos })
  const deadline = Date.now() + 10_000
  while (otherGot.length < 2 && Date.now() < deadline) await sleep(20)
  await sleep(300)
  assert.deepEqual(otherGot, ['own-0', 'own-1'])
  assert.deepEqual(selfGot, [])
  await Promise.all([self.endAsync(), other.endAsync()])
})

// `b` is the topic name itself: aedes capped every delivery at that subscription's QoS.
for (const [zero, one] of [['+', 'b'], ['+', '#'], ['#', '+'], ['b', '+'], ['b', '#']] as const) {
  test(`overlapping subscriptions (a/${zero} at QoS 0 and a/${one} at QoS 1, 3.1.1) deliver one copy of each message, at the highest QoS that matches and never above the QoS published [MQTT-3.3.4-2]`, async () => {
    const base = topicOf('overlap')
    const sub = await rawConnect(file.port, { clientId: `fp-overlap-${process.pid}-${seq}`, clean: true }, 4)
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/${zero}`, qos: 0 }, { topic: `${base}/${one}`, qos: 1 }] })
    await sub.waitFor((p) => p.cmd === 'suback')
    const pub = await connect({ protocolVersion: 4 })
    await pub.publishAsync(`${base}/b`, 'q1', { qos: 1 })
    await pub.publishAsync(`${base}/b`, 'q0', { qos: 0 })
    await sub.waitFor((p) => isPublish(p) && p.payload.toString() === 'q0')
    await sleep(300)
    const publishes = sub.packets.filter(isPublish).map((p) => [p.payload.toString(), p.qos])
    // One copy per message, at the highest QoS of the matching subscriptions [MQTT-3.3.4-2].
    assert.deepEqual(publishes.filter(([payload]) => payload === 'q1'), [['q1', 1]])
    assert.deepEqual(publishes.filter(([payload]) => payload === 'q0'), [['q0', 0]])
    for (const p of sub.packets.filter(isPublish)) if (p.qos > 0) sub.send({ cmd: 'puback', messageId: p.messageId })
    sub.send({ cmd: 'disconnect' })
    await pub.endAsync()
  })
}

test('a persistent session with a/b at QoS 0 and a/+ at QoS 1 gets a QoS 1 message at QoS 1, and again after a reconnect until it acknowledges it [MQTT-3.3.4-2, MQTT-4.4.0-1]', async () => {
  const base = topicOf('exact-persistent')
  const clientId = `fp-exact-${process.pid}-${seq}`
  const first = await rawConnect(file.port, { clientId, clean: false }, 4)
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/b`, qos: 0 }, { topic: `${base}/+`, qos: 1 }] })
  await first.waitFor((p) => p.cmd === 'suback')
  const pub = await connect({ protocolVersion: 4 })
  await pub.publishAsync(`${base}/b`, 'kept', { qos: 1 })
  const delivered = await first.waitFor<IPublishPacket>(isPublish)
  assert.deepEqual([delivered.payload.toString(), delivered.qos], ['kept', 1])
  first.destroy()
  await first.closed
  const second = await rawConnect(file.port, { clientId, clean: false }, 4)
  const again = await second.waitFor<IPublishPacket>(isPublish)
  assert.deepEqual([again.payload.toString(), again.qos, again.messageId, again.dup], ['kept', 1, delivered.messageId, true])
  second.send({ cmd: 'puback', messageId: again.messageId })
  await sleep(300)
  assert.equal(second.packets.filter(isPublish).length, 1, 'one copy, not one per subscription')
  second.send({ cmd: 'disconnect' })
  const third = await rawConnect(file.port, { clientId, clean: true }, 4)
  third.send({ cmd: 'disconnect' })
  await pub.endAsync()
})

for (const version of [4, 5] as const) {
  test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: retained messages sent on SUBSCRIBE go out at no more than that subscription's granted QoS [MQTT-3.8.4-8]`, async () => {
    const base = topicOf(`retained${version}`)
    const pub = await connect({ protocolVersion: version })
    await pub.publishAsync(`${base}/one`, 'r1', { qos: 1, retain: true })
    await pub.publishAsync(`${base}/two`, 'r2', { qos: 2, retain: true })
    const sub = await rawConnect(file.port, { clientId: `fp-ret-${version}-${process.pid}-${seq}`, clean: true }, version)
    // An exact subscription at QoS 0 first: the wildcard's retained copies must not be capped by it.
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/one`, qos: 0 }] })
    const atZero = await sub.waitFor<IPublishPacket>((p) => isPublish(p) && p.payload.toString() === 'r1')
    assert.deepEqual([atZero.qos, atZero.retain], [0, true])
    const publishes = async (count: number): Promise<void> => {
      const deadline = Date.now() + 10_000
      while (sub.packets.filter(isPublish).length < count && Date.now() < deadline) await sleep(20)
    }
    sub.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: `${base}/+`, qos: 0 }] })
    await publishes(3)
    sub.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: `${base}/#`, qos: 1 }] })
    await publishes(5)
    await sleep(300)
    const got = sub.packets.filter(isPublish).map((p) => `${p.payload.toString()}@${p.qos}`)
    // SUBSCRIBE 1: r1 at 0. SUBSCRIBE 2 (granted 0): both at 0. SUBSCRIBE 3 (granted 1): both at 1.
    assert.deepEqual(got.slice(0, 1), ['r1@0'])
    assert.deepEqual(got.slice(1, 3).sort(), ['r1@0', 'r2@0'])
    assert.deepEqual(got.slice(3).sort(), ['r1@1', 'r2@1'])
    for (const p of sub.packets.filter(isPublish)) if (p.qos > 0) sub.send({ cmd: 'puback', messageId: p.messageId })
    await pub.publishAsync(`${base}/one`, '', { qos: 1, retain: true })
    await pub.publishAsync(`${base}/two`, '', { qos: 1, retain: true })
    sub.send({ cmd: 'disconnect' })
    await pub.endAsync()
  })
}

test('MQTT 5.0: a client\'s own QoS 2 message comes back at the QoS of the subscription that takes it, not of a No Local one that does not [MQTT-3.8.3-3, MQTT-3.8.4-8]', async () => {
  const base = topicOf('nl-granted')
  const self = await connect({ protocolVersion: 5 })
  const got: number[] = []
  self.on('message', (_topic, _payload, packet) => got.push(packet.qos))
  await self.subscribeAsync(`${base}/b`, { qos: 1 })
  await self.subscribeAsync(`${base}/+`, { qos: 2, nl: true })
  await self.publishAsync(`${base}/b`, 'own', { qos: 2 })
  const deadline = Date.now() + 10_000
  while (got.length < 1 && Date.now() < deadline) await sleep(20)
  await sleep(300)
  assert.deepEqual(got, [1])
  await self.endAsync()
})

test('MQTT 5.0: a retained message goes out at the granted QoS of the filters that asked for retained messages, not of one with Retain Handling 2 [MQTT-3.8.4-8, MQTT-3.3.1-11]', async () => {
  const base = topicOf('retained-rh')
  const pub = await connect({ protocolVersion: 5 })
  await pub.publishAsync(`${base}/b`, 'kept', { qos: 1, retain: true })
  const sub = await rawConnect(file.port, { clientId: `fp-rh-${process.pid}-${seq}`, clean: true }, 5)
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/+`, qos: 0, rh: 0 }, { topic: `${base}/#`, qos: 1, rh: 2 }] } as never)
  await sub.waitFor((p) => isPublish(p) && p.payload.toString() === 'kept')
  await sleep(300)
  assert.deepEqual(sub.packets.filter(isPublish).map((p) => [p.payload.toString(), p.qos, p.retain]), [['kept', 0, true]])
  await pub.publishAsync(`${base}/b`, '', { qos: 1, retain: true })
  sub.send({ cmd: 'disconnect' })
  await pub.endAsync()
})
