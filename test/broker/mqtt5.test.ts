import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt, { type IPublishPacket as MqttJsPublish } from 'mqtt'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, IUnsubackPacket } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { runProgram as run } from '../helpers/program.js'

/*
 * Every MQTT 5.0 feature a client can observe, checked against the real `fleetmq start` with
 * MQTT.js, mosquitto's clients and a bare mqtt-packet client (for what the others hide: acks held
 * back, CONNACK properties, properties exactly as they came over the wire).
 */

let broker: RunningFleetmq
let port: number
let seq = 0
const id = (name: string): string => `${name}-${process.pid}-${++seq}`
const topicOf = (name: string): string => `t5/${id(name)}`

before(async () => {
  broker = await startFleetmq({ args: ['--allow-anonymous'] })
  port = broker.ports.mqtt
})
after(async () => {
  assert.equal(await broker.stop(), 0)
})

const connect5 = (options: mqtt.IClientOptions = {}) =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, ...options })

function nextMessage(client: mqtt.MqttClient, topic: string): Promise<MqttJsPublish> {
  return new Promise((resolve) => {
    const onMessage = (t: string, _p: Buffer, packet: MqttJsPublish) => {
      if (t !== topic) return
      client.off('message', onMessage)
      resolve(packet)
    }
    client.on('message', onMessage)
  })
}

test('CONNACK: assigned client identifier, server keep alive, clamped session expiry, limits, shared subscriptions available', async () => {
  const client = await rawConnect(port, { clientId: '', keepalive: 600, properties: { sessionExpiryInterval: 0xFFFFFFFF } })
  const connack = client.packets[0] as IConnackPacket
  assert.equal(connack.reasonCode, 0)
  assert.match(connack.properties?.assignedClientIdentifier ?? '', /.+/) // [MQTT-3.2.2-16]
  assert.equal(connack.properties?.serverKeepAlive, 300) // limits.maxKeepAlive [MQTT-3.2.2-21]
  assert.equal(connack.properties?.sessionExpiryInterval, 604_800) // limits.maxSessionExpiry
  assert.equal(connack.properties?.topicAliasMaximum, 64)
  assert.equal(connack.properties?.maximumPacketSize, 1_048_576)
  assert.equal(connack.properties?.receiveMaximum, 100) // limits.receiveMaximum [§3.2.2.3.3]
  // Absent means available [MQTT-3.2.2.3.13]; false would forbid $share subscriptions.
  assert.notEqual(connack.properties?.sharedSubscriptionAvailable, false)
  client.destroy()
})

test('user properties, response topic, correlation data, content type and payload format reach the subscriber', async () => {
  const topic = topicOf('props')
  const sub = await connect5()
  const pub = await connect5()
  await sub.subscribeAsync(topic, { qos: 1 })
  const received = nextMessage(sub, topic)
  await pub.publishAsync(topic, '{"q":1}', {
    qos: 1,
    properties: {
      userProperties: { tenant: 'acme', trace: ['a', 'b'] },
      responseTopic: `${topic}/reply`,
      correlationData: Buffer.from('req-42'),
      contentType: 'application/json',
      payloadFormatIndicator: true,
    },
  })
  const packet = await received
  assert.deepEqual({ ...packet.properties?.userProperties }, { tenant: 'acme', trace: ['a', 'b'] })
  assert.equal(packet.properties?.responseTopic, `${topic}/reply`)
  assert.equal(packet.properties?.correlationData?.toString(), 'req-42')
  assert.equal(packet.properties?.contentType, 'application/json')
  assert.equal(packet.properties?.payloadFormatIndicator, true)
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('request/response across mosquitto_pub and MQTT.js: a responder answers on the response topic with the correlation data', async () => {
  const topic = topicOf('rpc')
  const responder = await connect5()
  await responder.subscribeAsync(topic, { qos: 1 })
  responder.on('message', (_t, payload, packet) => {
    responder.publish(packet.properties!.responseTopic!, `echo:${payload}`, { qos: 1, properties: { correlationData: packet.properties!.correlationData } })
  })
  const requester = await connect5()
  await requester.subscribeAsync(`${topic}/reply`, { qos: 1 })
  const reply = nextMessage(requester, `${topic}/reply`)
  const sent = await run('mosquitto_pub', ['-V', 'mqttv5', '-p', String(port), '-h', '127.0.0.1', '-q', '1', '-t', topic, '-m', 'ping',
    '-D', 'publish', 'response-topic', `${topic}/reply`, '-D', 'publish', 'correlation-data', 'c-7', '-D', 'publish', 'user-property', 'k', 'v'])
  assert.equal(sent.code, 0, sent.stderr)
  const packet = await reply
  assert.equal(packet.payload.toString(), 'echo:ping')
  assert.equal(packet.properties?.correlationData?.toString(), 'c-7')
  await Promise.all([responder.endAsync(), requester.endAsync()])
})

test('message expiry: a queued message is dropped once expired and otherwise delivered with the remaining lifetime [MQTT-3.3.2-5, MQTT-3.3.2-6]', async () => {
  const topic = topicOf('expiry')
  const clientId = id('expiry-sub')
  const sub = await connect5({ clientId, clean: true, properties: { sessionExpiryInterval: 60 } })
  await sub.subscribeAsync(topic, { qos: 1 })
  await sub.endAsync()
  const pub = await connect5()
  await pub.publishAsync(topic, 'short', { qos: 1, properties: { messageExpiryInterval: 1 } })
  await pub.publishAsync(topic, 'long', { qos: 1, properties: { messageExpiryInterval: 120 } })
  await sleep(2_200)
  const messages: MqttJsPublish[] = []
  const back = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, clientId, clean: false, properties: { sessionExpiryInterval: 60 } })
  back.on('message', (_t, _p, packet) => messages.push(packet))
  const [connack] = await new Promise<[IConnackPacket]>((resolve) => back.once('connect', (c) => resolve([c])))
  assert.equal(connack.sessionPresent, true)
  await sleep(500)
  await pub.publishAsync(topic, 'marker', { qos: 1 })
  while (!messages.some((m) => m.payload.toString() === 'marker')) await sleep(50)
  assert.deepEqual(messages.map((m) => m.payload.toString()), ['long', 'marker'])
  const remaining = messages[0].properties?.messageExpiryInterval ?? 0
  assert.ok(remaining > 0 && remaining < 120, `remaining lifetime ${remaining} s must be below the 120 s published`)
  await Promise.all([back.endAsync(), pub.endAsync()])
})

test('topic alias from the client is resolved for subscribers', async () => {
  const topic = topicOf('alias')
  const sub = await connect5()
  await sub.subscribeAsync(topic, { qos: 0 })
  const pub = await rawConnect(port, { clientId: id('alias-pub') })
  const got: string[] = []
  sub.on('message', (t, p) => { if (t === topic) got.push(p.toString()) })
  pub.send({ cmd: 'publish', topic, payload: 'first', qos: 0, dup: false, retain: false, properties: { topicAlias: 3 } })
  pub.send({ cmd: 'publish', topic: '', payload: 'second', qos: 0, dup: false, retain: false, properties: { topicAlias: 3 } })
  while (got.length < 2) await sleep(20)
  assert.deepEqual(got, ['first', 'second'])
  pub.destroy()
  await sub.endAsync()
})

test('subscription identifiers come back on matching messages, live and retained, to MQTT.js and mosquitto_sub [MQTT-3.3.4-3]', async () => {
  const topic = topicOf('subid')
  const sub = await connect5()
  await sub.subscribeAsync(`${topic}/#`, { qos: 1, properties: { subscriptionIdentifier: 42 } })
  const received = nextMessage(sub, `${topic}/x`)
  const pub = await connect5()
  await pub.publishAsync(`${topic}/x`, 'hello', { qos: 1, retain: true })
  assert.equal((await received).properties?.subscriptionIdentifier, 42)
  const mosq = await run('mosquitto_sub', ['-V', 'mqttv5', '-p', String(port), '-h', '127.0.0.1', '-t', `${topic}/#`, '-C', '1', '-F', '%j',
    '-D', 'subscribe', 'subscription-identifier', '3'])
  assert.equal(mosq.code, 0, mosq.stderr)
  // mosquitto_sub's %j prints the message's properties as libmosquitto decoded them.
  const seen = JSON.parse(mosq.stdout) as { payload: string; properties?: Record<string, unknown> }
  assert.equal(seen.payload, 'hello')
  assert.equal(seen.properties?.['subscription-identifier'], 3, mosq.stdout)
  await pub.publishAsync(`${topic}/x`, '', { qos: 1, retain: true })
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('a message matching several subscriptions arrives once, with every matching identifier [MQTT-3.3.4-3, MQTT-3.3.4-4]', async () => {
  const topic = topicOf('subids')
  const sub = await connect5()
  await sub.subscribeAsync(`${topic}/#`, { qos: 1, properties: { subscriptionIdentifier: 1 } })
  await sub.subscribeAsync(`${topic}/+`, { qos: 1, properties: { subscriptionIdentifier: 2 } })
  await sub.subscribeAsync(`${topic}/a`, { qos: 0 })
  const received: { topic: string; ids: number[] | undefined }[] = []
  sub.on('message', (t, _p, packet) => {
    const ids = packet.properties?.subscriptionIdentifier
    received.push({ topic: t, ids: ids === undefined ? undefined : [ids].flat().sort() })
  })
  const pub = await connect5()
  const send = async (suffix: string): Promise<void> => {
    const done = new Promise<void>((resolve) => sub.on('message', (t) => { if (t === `${topic}/${suffix}`) resolve() }))
    await pub.publishAsync(`${topic}/${suffix}`, suffix, { qos: 1 })
    await done
  }
  await send('a') // all three match
  await send('a/b') // only `#`
  await sub.unsubscribeAsync(`${topic}/+`)
  await send('a')
  await sub.subscribeAsync(`${topic}/#`, { qos: 1 }) // the same filter again, now without an identifier
  await send('a')
  await send('end')
  assert.deepEqual(received, [
    { topic: `${topic}/a`, ids: [1, 2] },
    { topic: `${topic}/a/b`, ids: [1] },
    { topic: `${topic}/a`, ids: [1] },
    { topic: `${topic}/a`, ids: undefined },
    { topic: `${topic}/end`, ids: undefined },
  ], 'one copy per message, with the identifiers of the subscriptions that match it')
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('a resumed session keeps every identifier on its messages; a subscriber without identifiers gets none', async () => {
  const topic = topicOf('subids-resume')
  const clientId = id('subids-resume')
  const session = { clientId, clean: false, properties: { sessionExpiryInterval: 60 } }
  const first = await connect5(session)
  await first.subscribeAsync(`${topic}/+`, { qos: 1, properties: { subscriptionIdentifier: 7 } })
  await first.subscribeAsync(`${topic}/x`, { qos: 1, properties: { subscriptionIdentifier: 268_435_455 } })
  await first.endAsync()
  const resumed = await connect5({ ...session, clean: false })
  const plain = await connect5()
  await plain.subscribeAsync(`${topic}/+`, { qos: 1 })
  const got = nextMessage(resumed, `${topic}/x`)
  const gotPlain = nextMessage(plain, `${topic}/x`)
  const pub = await connect5()
  await pub.publishAsync(`${topic}/x`, 'x', { qos: 1 })
  assert.deepEqual([(await got).properties?.subscriptionIdentifier].flat().sort((a, b) => Number(a) - Number(b)), [7, 268_435_455])
  assert.equal((await gotPlain).properties?.subscriptionIdentifier, undefined)
  await Promise.all([resumed.endAsync(), plain.endAsync(), pub.endAsync()])
})

test('mosquitto_sub with two overlapping filters gets each message once', async () => {
  const topic = topicOf('subids-mosq')
  // Line-buffered: the SUBACK line must reach us before we publish (a pipe is block-buffered).
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-V', 'mqttv5', '-p', String(port), '-h', '127.0.0.1', '-t', `${topic}/#`, '-t', `${topic}/a`,
    '-D', 'subscribe', 'subscription-identifier', '5', '-q', '1', '-C', '2', '-d', '-F', 'MSG %t %p'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  const subscribed = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => { stdout += d; if (stdout.includes('received SUBACK')) resolve() }))
  // 'close', not 'exit': it comes once stdout has been read to the end.
  const exited = once(child, 'close')
  const timer = setTimeout(() => child.kill('SIGTERM'), 15_000)
  await subscribed
  const pub = await connect5()
  await pub.publishAsync(`${topic}/a`, 'one', { qos: 1 })
  await pub.publishAsync(`${topic}/a`, 'two', { qos: 1 })
  const [code] = (await exited) as [number | null]
  clearTimeout(timer)
  assert.equal(code, 0)
  assert.deepEqual(stdout.split('\n').filter((l) => l.startsWith('MSG ')), [`MSG ${topic}/a one`, `MSG ${topic}/a two`], stdout)
  await pub.endAsync()
})

test('a PUBLISH from a client with a Subscription Identifier: DISCONNECT 0x82, not routed [MQTT-3.3.4-6]', async () => {
  const topic = topicOf('subid-from-client')
  const sub = await connect5()
  await sub.subscribeAsync(topic, { qos: 1 })
  const seen: string[] = []
  sub.on('message', (_t, p) => seen.push(p.toString()))
  const raw = await rawConnect(port, { clientId: id('subid-pub') })
  raw.send({ cmd: 'publish', topic, payload: Buffer.from('forged'), qos: 1, messageId: 1, retain: false, dup: false, properties: { subscriptionIdentifier: 9 } })
  const disconnect = await raw.waitFor<IDisconnectPacket>((p) => p.cmd === 'disconnect')
  assert.equal(disconnect.reasonCode, 0x82)
  assert.match(String(disconnect.properties?.reasonString), /MQTT-3\.3\.4-6/)
  await raw.closed
  const after = nextMessage(sub, topic)
  const pub = await connect5()
  await pub.publishAsync(topic, 'fine', { qos: 1 })
  assert.equal((await after).properties?.subscriptionIdentifier, undefined)
  assert.deepEqual(seen, ['fine'])
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('no local: a subscriber with No Local does not get its own messages [MQTT-3.8.3-3]', async () => {
  const topic = topicOf('nl')
  const self = await connect5()
  const other = await connect5()
  await self.subscribeAsync(topic, { qos: 1, nl: true })
  await other.subscribeAsync(topic, { qos: 1 })
  const own: string[] = []
  self.on('message', (_t, p) => own.push(p.toString()))
  const seenByOther = nextMessage(other, topic)
  await self.publishAsync(topic, 'mine', { qos: 1 })
  assert.equal((await seenByOther).payload.toString(), 'mine')
  const fromOther = nextMessage(self, topic)
  await other.publishAsync(topic, 'theirs', { qos: 1 })
  await fromOther
  assert.deepEqual(own, ['theirs'])
  await Promise.all([self.endAsync(), other.endAsync()])
})

test('retain as published keeps the RETAIN flag on live messages; without it the flag is cleared [MQTT-3.3.1-12, MQTT-3.3.1-13]', async () => {
  const topic = topicOf('rap')
  const rap = await connect5()
  const plain = await connect5()
  await rap.subscribeAsync(topic, { qos: 1, rap: true })
  await plain.subscribeAsync(topic, { qos: 1 })
  const a = nextMessage(rap, topic)
  const b = nextMessage(plain, topic)
  const pub = await connect5()
  await pub.publishAsync(topic, 'r', { qos: 1, retain: true })
  assert.equal((await a).retain, true)
  assert.equal((await b).retain, false)
  await pub.publishAsync(topic, '', { qos: 1, retain: true })
  await Promise.all([rap.endAsync(), plain.endAsync(), pub.endAsync()])
})

test('retain handling 0, 1 and 2 on subscribe [MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11]', async () => {
  const topic = topicOf('rh')
  const pub = await connect5()
  await pub.publishAsync(topic, 'kept', { qos: 1, retain: true })
  const retainedCount = async (rh: 0 | 1 | 2, twice: boolean): Promise<number> => {
    const c = await connect5()
    let n = 0
    c.on('message', (t) => { if (t === topic) n++ })
    await c.subscribeAsync(topic, { qos: 1, rh })
    if (twice) await c.subscribeAsync(topic, { qos: 1, rh })
    await sleep(400)
    await c.endAsync()
    return n
  }
  assert.equal(await retainedCount(0, true), 2)
  assert.equal(await retainedCount(1, true), 1)
  assert.equal(await retainedCount(2, false), 0)
  await pub.publishAsync(topic, '', { qos: 1, retain: true })
  await pub.endAsync()
})

test('receive maximum: the broker never has more unacknowledged QoS 1 messages in flight than the client allows [MQTT-3.3.4-9]', async () => {
  const topic = topicOf('rm')
  const sub = await rawConnect(port, { clientId: id('rm-sub'), properties: { receiveMaximum: 2 } })
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  const pub = await connect5()
  for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `m${i}`, { qos: 1 })
  await sub.waitFor((p) => p.cmd === 'publish')
  await sleep(500)
  const publishes = () => sub.packets.filter((p): p is IPublishPacket => p.cmd === 'publish')
  assert.equal(publishes().length, 2, 'only Receive Maximum messages before any PUBACK')
  for (let acked = 0; acked < 5; acked++) {
    const next = await sub.waitFor<IPublishPacket>((p) => p.cmd === 'publish' && publishes().indexOf(p as IPublishPacket) === acked)
    sub.send({ cmd: 'puback', messageId: next.messageId })
  }
  assert.deepEqual(publishes().map((p) => p.payload.toString()), ['m0', 'm1', 'm2', 'm3', 'm4'])
  sub.destroy()
  await pub.endAsync()
})

test('maximum packet size: a message larger than the client accepts is not sent, later ones are [MQTT-3.1.2-24, MQTT-3.1.2-25]', async () => {
  const topic = topicOf('mps')
  const sub = await rawConnect(port, { clientId: id('mps-sub'), properties: { maximumPacketSize: 200 } })
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  const pub = await connect5()
  await pub.publishAsync(topic, 'x'.repeat(1_000), { qos: 1 })
  await pub.publishAsync(topic, 'small', { qos: 1 })
  const got = await sub.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
  assert.equal(got.payload.toString(), 'small')
  assert.equal(sub.packets.filter((p) => p.cmd === 'publish').length, 1)
  sub.destroy()
  await pub.endAsync()
})

test('a QoS 2 message reaches a QoS 1 wildcard subscription at QoS 1 [MQTT-3.8.4-8]', async () => {
  const topic = topicOf('qos')
  const sub = await rawConnect(port, { clientId: id('qos-sub') })
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${topic}/+`, qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  const pub = await connect5()
  await pub.publishAsync(`${topic}/a`, 'q2', { qos: 2 })
  const got = await sub.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
  assert.equal(got.qos, 1)
  sub.destroy()
  await pub.endAsync()
})

test('session expiry: the session outlives the connection for its interval and no longer', async () => {
  const topic = topicOf('sei')
  const clientId = id('sei')
  const first = await connect5({ clientId, properties: { sessionExpiryInterval: 2 } })
  await first.subscribeAsync(topic, { qos: 1 })
  await first.endAsync()
  const pub = await connect5()
  await pub.publishAsync(topic, 'while-away', { qos: 1 })
  const back = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, clientId, clean: false, properties: { sessionExpiryInterval: 1 } })
  const message = nextMessage(back, topic)
  const [connack] = await new Promise<[IConnackPacket]>((resolve) => back.once('connect', (c) => resolve([c])))
  assert.equal(connack.sessionPresent, true)
  assert.equal((await message).payload.toString(), 'while-away')
  await back.endAsync()
  await sleep(2_000)
  const late = await connect5({ clientId, clean: false })
  // MQTT.js keeps the CONNACK on the client
  assert.equal((late as unknown as { connackPacket?: IConnackPacket }).connackPacket?.sessionPresent ?? false, false)
  await Promise.all([late.endAsync(), pub.endAsync()])
})

test('will delay: the will waits for its delay and a reconnect within it cancels the will [MQTT-3.1.3-9]', async () => {
  const topic = topicOf('will')
  const watcher = await connect5()
  await watcher.subscribeAsync(topic, { qos: 1 })
  const wills: string[] = []
  watcher.on('message', (t, p) => { if (t === topic) wills.push(p.toString()) })
  const connectWithWill = (clientId: string, payload: string) => rawConnect(port, {
    clientId,
    properties: { sessionExpiryInterval: 30 },
    will: { topic, payload: Buffer.from(payload), qos: 1, retain: false, properties: { willDelayInterval: 1 } },
  })
  const cancelledId = id('will-cancel')
  const cancelled = await connectWithWill(cancelledId, 'cancelled')
  cancelled.destroy()
  await sleep(200)
  const resumed = await rawConnect(port, { clientId: cancelledId, clean: false, properties: { sessionExpiryInterval: 30 } })
  const sent = await connectWithWill(id('will-sent'), 'sent')
  const droppedAt = Date.now()
  sent.destroy()
  await sleep(400)
  assert.deepEqual(wills, [], 'no will before its delay')
  while (wills.length === 0) await sleep(50)
  assert.ok(Date.now() - droppedAt >= 900)
  await sleep(1_200)
  assert.deepEqual(wills, ['sent'])
  resumed.destroy()
  await watcher.endAsync()
})

test('reason codes: UNSUBACK 0x11 for no subscription, SUBACK 0x9E-free shared subscribe, DISCONNECT 0x8E on takeover with a reason string', async () => {
  const clientId = id('rc')
  const a = await rawConnect(port, { clientId })
  a.send({ cmd: 'unsubscribe', messageId: 7, unsubscriptions: [topicOf('none')] })
  const unsuback = await a.waitFor<IUnsubackPacket>((p) => p.cmd === 'unsuback')
  assert.deepEqual(unsuback.granted, [0x11])
  a.send({ cmd: 'subscribe', messageId: 8, subscriptions: [{ topic: `$share/g/${topicOf('rc')}`, qos: 1 }] })
  const suback = await a.waitFor<ISubackPacket>((p) => p.cmd === 'suback')
  assert.deepEqual(suback.granted, [1])
  const b = await rawConnect(port, { clientId })
  const disconnect = await a.waitFor<IDisconnectPacket>((p) => p.cmd === 'disconnect')
  assert.equal(disconnect.reasonCode, 0x8E)
  assert.match(disconnect.properties?.reasonString ?? '', /another connection/i)
  b.destroy()
})

test('$SYS (allowed by an ACL rule): a # subscriber gets no $SYS topics; a $SYS/# subscriber reads them without breaking; then, with serverReference set, stopping the node sends 5.0 clients DISCONNECT 0x9C with the Server Reference [MQTT-3.14.2.2.7]', async () => {
  const node = await startFleetmq({ config: {
    allowAnonymous: true,
    listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
    serverReference: 'mqtt-2.example.net:1883',
    acl: { rules: [{ action: 'allow', permission: 'subscribe', topics: ['$SYS/#'] }] },
  } })
  try {
    const url = `mqtt://127.0.0.1:${node.ports.mqtt}`
    const all = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 })
    const sys = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 })
    const topics: string[] = []
    all.on('message', (t) => topics.push(t))
    await all.subscribeAsync('#', { qos: 0 })
    await sys.subscribeAsync('$SYS/#', { qos: 0 })
    const announced = new Promise<string>((resolve) => sys.on('message', (t) => resolve(t)))
    const newcomer = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 })
    assert.match(await announced, /^\$SYS\//)
    await sleep(200)
    assert.ok(!topics.some((t) => t.startsWith('$')), `# must not match $ topics [MQTT-4.7.2-1], got ${topics.join(', ')}`)
    assert.ok(sys.connected && all.connected)
    await Promise.all([all.endAsync(), sys.endAsync(), newcomer.endAsync()])

    const client = await rawConnect(node.ports.mqtt, { clientId: id('redirect') })
    // aedes answers packets only once the connection is fully set up; before that it has no DISCONNECT to send.
    client.send({ cmd: 'pingreq' })
    await client.waitFor((p) => p.cmd === 'pingresp')
    const stopped = node.stop()
    // The drain first stops the listeners (up to a third of shutdownTimeout), then tells clients.
    const disconnect = await client.waitFor<IDisconnectPacket>((p) => p.cmd === 'disconnect', 20_000).catch((err: Error) => {
      throw new Error(`${err.message}; broker log: ${JSON.stringify(node.logs.slice(-8))}`)
    })
    assert.equal(disconnect.reasonCode, 0x9C)
    assert.equal(disconnect.properties?.serverReference, 'mqtt-2.example.net:1883')
    assert.equal(await stopped, 0)
  } finally {
    await node.stop()
  }
})

test('SUBACK has one reason code per filter in the SUBSCRIBE\'s order, with a filter named twice and integer-like filters [MQTT-3.9.3-1]', async () => {
  const base = id('order')
  for (const version of [4, 5] as const) {
    const raw = await rawConnect(port, { clientId: id(`order-${version}`) }, version)
    try {
      // aedes alone answered 3 codes here, the integer-like filter's first.
      raw.send({ cmd: 'subscribe', messageId: 7, subscriptions: [
        { topic: `${base}/a`, qos: 1 }, { topic: '42', qos: 0 }, { topic: `${base}/a`, qos: 2 }, { topic: `${base}/b`, qos: 1 },
      ] })
      const suback = await raw.waitFor<ISubackPacket>((p) => p.cmd === 'suback' && p.messageId === 7)
      // The second `a` replaces the first [MQTT-3.8.4-3]: both entries answer for the QoS 2 one.
      assert.deepEqual(suback.granted, [2, 0, 2, 1], `version ${version}`)
      const pub = await connect5()
      await pub.publishAsync(`${base}/a`, 'x', { qos: 2 })
      const got = await raw.waitFor<IPublishPacket>((p) => p.cmd === 'publish' && p.topic === `${base}/a`)
      assert.equal(got.qos, 2, 'the subscription that took effect is the last one named')
      await pub.endAsync()
    } finally {
      raw.destroy()
    }
  }
})
