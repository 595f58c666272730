import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { runProgram as run } from '../helpers/program.js'

/*
 * MQTT 3.1 (mosquitto_pub/sub -V mqttv31, MQTT.js protocolVersion 3) and 3.1.1 (MQTT.js
 * protocolVersion 4, mosquitto -V mqttv311) on the same port as 5.0.
 */

let broker: RunningFleetmq
let port: number
let seq = 0
const topicOf = (name: string): string => `t3/${name}-${process.pid}-${++seq}`

before(async () => {
  broker = await startFleetmq({ args: ['--allow-anonymous'] })
  port = broker.ports.mqtt
})
after(async () => {
  assert.equal(await broker.stop(), 0)
})

const connect = (protocolVersion: 3 | 4, options: mqtt.IClientOptions = {}) =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion, protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT', reconnectPeriod: 0, ...options })

const mosq = (version: 'mqttv31' | 'mqttv311', ...args: string[]): string[] => ['-V', version, '-h', '127.0.0.1', '-p', String(port), ...args]

for (const version of [3, 4] as const) {
  test(`MQTT.js protocolVersion ${version}: QoS 0, 1 and 2 arrive once each at the QoS asked for`, async () => {
    const topic = topicOf(`qos${version}`)
    const sub = await connect(version)
    const pub = await connect(version)
    const got: [string, number][] = []
    sub.on('message', (_t, p, packet) => got.push([p.toString(), packet.qos]))
    await sub.subscribeAsync(topic, { qos: 2 })
    for (const qos of [0, 1, 2] as const) await pub.publishAsync(topic, `q${qos}`, { qos })
    while (got.length < 3) await sleep(20)
    await sleep(200)
    assert.deepEqual(got, [['q0', 0], ['q1', 1], ['q2', 2]])
    await Promise.all([sub.endAsync(), pub.endAsync()])
  })
}

test('3.1 (mosquitto_pub -V mqttv31) to 3.1.1 (mosquitto_sub -V mqttv311) with QoS 2, and a retained message for a later 3.1 subscriber', async () => {
  const topic = topicOf('mosq')
  const sub = spawn('mosquitto_sub', mosq('mqttv311', '-t', topic, '-q', '2', '-C', '1', '-v'), { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  sub.stdout.on('data', (d: Buffer) => { out += d })
  // mosquitto_sub buffers its output; publish until its subscription is in place.
  for (let i = 0; out === '' && i < 50; i++) {
    const pub = await run('mosquitto_pub', mosq('mqttv31', '-t', topic, '-q', '2', '-m', 'from-3.1'))
    assert.equal(pub.code, 0, pub.stderr)
    await Promise.race([once(sub, 'exit'), sleep(200)])
  }
  assert.equal(out.trim(), `${topic} from-3.1`)
  const retain = await run('mosquitto_pub', mosq('mqttv31', '-t', `${topic}/r`, '-q', '1', '-r', '-m', 'kept'))
  assert.equal(retain.code, 0, retain.stderr)
  const late = await run('mosquitto_sub', mosq('mqttv31', '-t', `${topic}/r`, '-C', '1', '-v'))
  assert.equal(late.stdout.trim(), `${topic}/r kept`)
  await run('mosquitto_pub', mosq('mqttv311', '-t', `${topic}/r`, '-r', '-n'))
})

test('retained messages: set, replaced, delivered with RETAIN on subscribe, cleared by an empty payload [MQTT-3.3.1-5, MQTT-3.3.1-10]', async () => {
  const topic = topicOf('retain')
  const pub = await connect(4)
  await pub.publishAsync(topic, 'one', { qos: 1, retain: true })
  await pub.publishAsync(topic, 'two', { qos: 1, retain: true })
  const sub = await connect(3)
  const got = new Promise<[string, boolean]>((resolve) => sub.on('message', (_t, p, packet) => resolve([p.toString(), packet.retain])))
  await sub.subscribeAsync(topic, { qos: 1 })
  assert.deepEqual(await got, ['two', true])
  await pub.publishAsync(topic, '', { qos: 1, retain: true })
  const empty = await connect(4)
  let count = 0
  empty.on('message', () => count++)
  await empty.subscribeAsync(topic, { qos: 1 })
  await sleep(300)
  assert.equal(count, 0)
  await Promise.all([pub.endAsync(), sub.endAsync(), empty.endAsync()])
})

for (const version of [3, 4] as const) {
  test(`protocolVersion ${version}: the will is published when the connection drops without DISCONNECT, not after a clean DISCONNECT`, async () => {
    const topic = topicOf(`will${version}`)
    const watcher = await connect(4)
    const wills: string[] = []
    watcher.on('message', (_t, p) => wills.push(p.toString()))
    await watcher.subscribeAsync(topic, { qos: 1 })
    const polite = await rawConnect(port, { clientId: `polite-${version}-${process.pid}`, will: { topic, payload: Buffer.from('polite'), qos: 1, retain: false } }, version)
    polite.send({ cmd: 'disconnect' })
    await polite.closed
    const dropped = await rawConnect(port, { clientId: `dropped-${version}-${process.pid}`, will: { topic, payload: Buffer.from('dropped'), qos: 1, retain: false } }, version)
    dropped.destroy()
    while (wills.length === 0) await sleep(20)
    await sleep(300)
    assert.deepEqual(wills, ['dropped'])
    await watcher.endAsync()
  })
}

for (const version of [3, 4] as const) {
  test(`protocolVersion ${version}: a persistent session keeps its subscriptions and queues QoS 1/2 messages while offline`, async () => {
    const topic = topicOf(`session${version}`)
    const clientId = `p${version}-${process.pid}`
    const first = await connect(version, { clientId, clean: false })
    await first.subscribeAsync(topic, { qos: 2 })
    await first.endAsync()
    const pub = await connect(4)
    await pub.publishAsync(topic, 'a', { qos: 1 })
    await pub.publishAsync(topic, 'b', { qos: 2 })
    await pub.publishAsync(topic, 'dropped-qos0', { qos: 0 })
    const got: string[] = []
    const back = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: version, protocolId: version === 3 ? 'MQIsdp' : 'MQTT', reconnectPeriod: 0, clientId, clean: false })
    back.on('message', (_t, p) => got.push(p.toString()))
    const sessionPresent = await new Promise<boolean>((resolve) => back.once('connect', (connack) => resolve(connack.sessionPresent)))
    if (version === 4) assert.equal(sessionPresent, true) // [MQTT-3.2.2-2]; 3.1 has no such flag
    while (got.length < 2) await sleep(20)
    await pub.publishAsync(topic, 'live', { qos: 1 })
    while (got.length < 3) await sleep(20)
    // order holds per QoS level, not across QoS 1 and 2 [MQTT-4.6.0-6]
    assert.deepEqual(got.slice(0, 2).sort(), ['a', 'b'])
    assert.equal(got[2], 'live')
    await back.endAsync()
    // a clean session discards it [MQTT-3.1.2-6]
    const clean = await connect(version, { clientId, clean: true })
    await clean.endAsync()
    await pub.publishAsync(topic, 'nobody', { qos: 1 })
    const after = await connect(version, { clientId, clean: false })
    const late: string[] = []
    after.on('message', (_t, p) => late.push(p.toString()))
    await sleep(400)
    assert.deepEqual(late, [])
    await Promise.all([after.endAsync(), pub.endAsync()])
  })
}
