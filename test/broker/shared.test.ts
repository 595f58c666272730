import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import type { IPublishPacket } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { rawConnect } from '../helpers/raw-mqtt.js'

/*
 * Shared subscriptions `$share/<group>/<filter>` on the real `fleetmq start`, with 3.1.1 and 5.0
 * MQTT.js clients and a bare client that holds its PUBACKs back.
 */

const STRATEGIES = ['round_robin', 'random', 'sticky', 'hash_clientid'] as const
const brokers: Partial<Record<(typeof STRATEGIES)[number], RunningFleetmq>> = {}
let seq = 0
const topicOf = (name: string): string => `sh/${name}-${process.pid}-${++seq}`

before(async () => {
  // One node per strategy (it is a node-wide setting), started one after the other: on two
  // shared cores four starting at once can take longer than the helper waits.
  for (const strategy of STRATEGIES) {
    brokers[strategy] = await startFleetmq({ config: {
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      sharedSubscriptions: { strategy },
    } })
  }
})
after(async () => {
  for (const broker of Object.values(brokers)) assert.equal(await broker!.stop(), 0)
})

const url = (strategy: (typeof STRATEGIES)[number]): string => `mqtt://127.0.0.1:${brokers[strategy]!.ports.mqtt}`

interface Member {
  readonly client: mqtt.MqttClient
  readonly got: string[]
}

async function member(strategy: (typeof STRATEGIES)[number], filter: string, protocolVersion: 4 | 5, qos: 0 | 1 | 2 = 1): Promise<Member> {
  const client = await mqtt.connectAsync(url(strategy), { protocolVersion, reconnectPeriod: 0 })
  const got: string[] = []
  client.on('message', (_t, payload) => got.push(payload.toString()))
  const [granted] = await client.subscribeAsync(filter, { qos })
  assert.equal(granted.qos, qos, `SUBACK for ${filter}`)
  return { client, got }
}

async function publishAll(strategy: (typeof STRATEGIES)[number], topic: string, count: number, options: mqtt.IClientOptions = {}): Promise<void> {
  const pub = await mqtt.connectAsync(url(strategy), { protocolVersion: 5, reconnectPeriod: 0, ...options })
  for (let i = 0; i < count; i++) await pub.publishAsync(topic, `m${i}`, { qos: 1 })
  await pub.endAsync()
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

const sorted = (values: string[]): string[] => [...values].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
const expected = (count: number): string[] => Array.from({ length: count }, (_, i) => `m${i}`)

test('each message goes to exactly one member of a group (3.1.1 and 5.0 members); two groups and a plain subscriber each get all', async () => {
  const topic = topicOf('once')
  const N = 60
  const groupA = [await member('round_robin', `$share/a/${topic}`, 4), await member('round_robin', `$share/a/${topic}`, 5), await member('round_robin', `$share/a/${topic}`, 5)]
  const groupB = [await member('round_robin', `$share/b/${topic}`, 5), await member('round_robin', `$share/b/${topic}`, 4)]
  const plain = await member('round_robin', topic, 4)
  await publishAll('round_robin', topic, N)
  const count = (members: Member[]) => members.reduce((n, m) => n + m.got.length, 0)
  await until(() => count(groupA) === N && count(groupB) === N && plain.got.length === N, 'every copy')
  await sleep(300)
  assert.deepEqual(sorted(groupA.flatMap((m) => m.got)), expected(N), 'group a: each message once')
  assert.deepEqual(sorted(groupB.flatMap((m) => m.got)), expected(N), 'group b: each message once')
  assert.deepEqual(plain.got, expected(N))
  // round robin spreads evenly
  assert.deepEqual(groupA.map((m) => m.got.length), [20, 20, 20])
  assert.deepEqual(groupB.map((m) => m.got.length), [30, 30])
  await Promise.all([...groupA, ...groupB, plain].map((m) => m.client.endAsync()))
})

test('random spreads messages over members, each once', async () => {
  const topic = topicOf('random')
  const N = 90
  const members = [await member('random', `$share/g/${topic}`, 5), await member('random', `$share/g/${topic}`, 5), await member('random', `$share/g/${topic}`, 4)]
  await publishAll('random', topic, N)
  await until(() => members.reduce((n, m) => n + m.got.length, 0) === N, 'all messages')
  assert.deepEqual(sorted(members.flatMap((m) => m.got)), expected(N))
  for (const m of members) assert.ok(m.got.length > 0, `every member gets some (got ${members.map((x) => x.got.length)})`)
  await Promise.all(members.map((m) => m.client.endAsync()))
})

test('sticky keeps one member until it leaves, then another takes over', async () => {
  const topic = topicOf('sticky')
  const members = [await member('sticky', `$share/g/${topic}`, 5), await member('sticky', `$share/g/${topic}`, 5), await member('sticky', `$share/g/${topic}`, 4)]
  await publishAll('sticky', topic, 20)
  await until(() => members.reduce((n, m) => n + m.got.length, 0) === 20, 'first batch')
  const chosen = members.find((m) => m.got.length > 0)!
  assert.equal(chosen.got.length, 20, 'one member gets every message')
  await chosen.client.endAsync()
  const rest = members.filter((m) => m !== chosen)
  await publishAll('sticky', topic, 20)
  await until(() => rest.reduce((n, m) => n + m.got.length, 0) === 20, 'second batch')
  assert.deepEqual(rest.map((m) => m.got.length).sort(), [0, 20])
  await Promise.all(rest.map((m) => m.client.endAsync()))
})

test('hash_clientid keeps each publisher on one member', async () => {
  const topic = topicOf('hash')
  const members = [await member('hash_clientid', `$share/g/${topic}`, 5), await member('hash_clientid', `$share/g/${topic}`, 5), await member('hash_clientid', `$share/g/${topic}`, 4)]
  const publishers = ['sensor-1', 'sensor-2', 'sensor-3', 'sensor-4', 'sensor-5', 'sensor-6']
  for (const clientId of publishers) {
    const pub = await mqtt.connectAsync(url('hash_clientid'), { protocolVersion: 5, reconnectPeriod: 0, clientId })
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `${clientId}:${i}`, { qos: 1 })
    await pub.endAsync()
  }
  await until(() => members.reduce((n, m) => n + m.got.length, 0) === 30, 'all messages')
  for (const clientId of publishers) {
    const holders = members.filter((m) => m.got.some((p) => p.startsWith(`${clientId}:`)))
    assert.equal(holders.length, 1, `${clientId}'s messages all go to one member`)
    assert.equal(holders[0].got.filter((p) => p.startsWith(`${clientId}:`)).length, 5)
  }
  assert.ok(members.filter((m) => m.got.length > 0).length > 1, 'different publishers land on different members')
  await Promise.all(members.map((m) => m.client.endAsync()))
})

test('a member that leaves with unacknowledged QoS 1 messages: they go to another member', async () => {
  const topic = topicOf('handover')
  for (const version of [4, 5] as const) {
    const hoarder = await rawConnect(brokers.round_robin!.ports.mqtt, { clientId: `hoarder-${version}-${process.pid}` }, version)
    hoarder.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/h${version}/${topic}`, qos: 1 }] })
    await hoarder.waitFor((p) => p.cmd === 'suback')
    const other = await member('round_robin', `$share/h${version}/${topic}`, version)
    await publishAll('round_robin', topic, 10)
    await until(() => hoarder.packets.filter((p) => p.cmd === 'publish').length === 5 && other.got.length === 5, 'the first spread')
    const held = hoarder.packets.filter((p): p is IPublishPacket => p.cmd === 'publish').map((p) => p.payload.toString())
    hoarder.destroy() // never acknowledged
    await until(() => other.got.length === 10, 'the hand-over')
    assert.deepEqual(sorted(other.got), expected(10))
    assert.deepEqual(other.got.slice(5).sort(), [...held].sort())
    await other.client.endAsync()
  }
})

test('unsubscribe leaves the group; a persistent member resumes its membership and gets what was sent while it was away', async () => {
  const topic = topicOf('session')
  const stay = await member('round_robin', `$share/g/${topic}`, 5)
  const leaver = await member('round_robin', `$share/g/${topic}`, 4)
  await leaver.client.unsubscribeAsync(`$share/g/${topic}`)
  await publishAll('round_robin', topic, 6)
  await until(() => stay.got.length === 6, 'all to the remaining member')
  assert.equal(leaver.got.length, 0)
  await Promise.all([stay.client.endAsync(), leaver.client.endAsync()])

  const clientId = `persistent-${process.pid}`
  const options = { protocolVersion: 5 as const, reconnectPeriod: 0, clientId, clean: false, properties: { sessionExpiryInterval: 60 } }
  const first = await mqtt.connectAsync(url('round_robin'), options)
  await first.subscribeAsync(`$share/p/${topic}`, { qos: 1 })
  await first.endAsync()
  await publishAll('round_robin', topic, 3)
  const got: string[] = []
  const back = mqtt.connect(url('round_robin'), options)
  back.on('message', (_t, p) => got.push(p.toString()))
  await until(() => got.length === 3, 'queued messages on resume')
  await publishAll('round_robin', topic, 2)
  await until(() => got.length === 5, 'live messages after resume')
  assert.deepEqual(got, ['m0', 'm1', 'm2', 'm0', 'm1'])
  await back.endAsync()
})

test('a QoS 0 member gets QoS 1 messages at QoS 0, and No Local on a shared subscription is a protocol error [MQTT-3.8.4-8, MQTT-3.8.3-4]', async () => {
  const topic = topicOf('qos')
  const sub = await rawConnect(brokers.round_robin!.ports.mqtt, { clientId: `q0-${process.pid}` })
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/g/${topic}`, qos: 0 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  await publishAll('round_robin', topic, 1)
  const got = await sub.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
  assert.equal(got.qos, 0)
  sub.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: `$share/g/${topic}/x`, qos: 1, nl: true }] })
  const disconnect = await sub.waitFor((p) => p.cmd === 'disconnect')
  assert.equal((disconnect as { reasonCode?: number }).reasonCode, 0x82)
  await sub.closed
})

test('a member also subscribed to the topic itself at a lower QoS gets the shared copy at the shared subscription\'s QoS [MQTT-3.8.4-8, §4.8.2]', async () => {
  const topic = topicOf('exact')
  const sub = await rawConnect(brokers.round_robin!.ports.mqtt, { clientId: `exact-${process.pid}` })
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }, { topic: `$share/g/${topic}`, qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  await publishAll('round_robin', topic, 1)
  await sub.waitFor((p) => p.cmd === 'publish' && p.qos === 1)
  await sleep(300)
  const got = sub.packets.filter((p): p is IPublishPacket => p.cmd === 'publish').map((p) => p.qos).sort()
  assert.deepEqual(got, [0, 1], 'the ordinary subscription\'s copy at QoS 0, the shared one at QoS 1')
  sub.destroy()
  await sub.closed
})
