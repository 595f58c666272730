import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Packet } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { encode, rawClient, type RawClient } from '../helpers/raw-client.js'
import { runProgram as run } from '../helpers/program.js'
import { runPaho } from '../helpers/paho.js'

/*
 * The client's Receive Maximum (5.0 §3.3.4, [MQTT-3.3.4-9]) on every way a QoS 1/2 message reaches
 * a session (broker/core/session.ts): a raw 5.0 subscriber that advertises Receive Maximum 2 and
 * withholds its acknowledgements must never have more than 2 QoS 1/2 PUBLISH packets outstanding,
 * whether the message came from a 3.1.1 or 5.0 publisher on the broker's own PUBLISH path, at
 * QoS 2, as a retained message on SUBSCRIBE, through overlapping and shared subscriptions, or from
 * the session's queue on resume. The node's own bound (limits.maxInflight, 100 by default) is far
 * above 2: only the client's value can hold the window.
 */

const RECEIVE_MAXIMUM = 2
/** Long enough for anything the broker would still send to arrive. */
const SETTLE_MS = 500

let broker: RunningFleetmq
let port: number
let seq = 0
const id = (name: string): string => `${name}-${process.pid}-${++seq}`
const open: RawClient[] = []

before(async () => {
  broker = await startFleetmq({ config: { allowAnonymous: true, listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }] } })
  port = broker.ports.mqtt
})
after(async () => {
  for (const client of open) client.destroy()
  assert.equal(await broker.stop(), 0)
})

type Publish = Extract<Packet, { cmd: 'publish' }>

/**
 * A raw 5.0 subscriber with Receive Maximum 2 that acknowledges nothing unless told to. What is
 * outstanding is worked out from the packets received and the acknowledgements sent, in order (a
 * resent packet identifier counts once).
 */
interface Withholding {
  readonly client: RawClient
  readonly publishes: () => Publish[]
  /** The most QoS 1/2 PUBLISH packets outstanding at any point so far. */
  readonly peak: () => number
  readonly outstanding: () => number[]
  /** Acknowledges the oldest outstanding message: PUBACK, or PUBREC, then PUBCOMP once PUBREL arrives. */
  ackOldest(): Promise<void>
}

async function withholding(options: { clientId?: string; clean?: boolean; sessionExpiry?: number } = {}): Promise<Withholding> {
  const client = await rawClient(port, 5)
  open.push(client)
  /** Each acknowledgement that gave a quota back, with how many packets had been received when it was sent. */
  const freed: { messageId: number; at: number }[] = []
  /** Outstanding packet ids after the first `upTo` received packets, and the peak on the way. */
  const replay = (upTo: number): { ids: Set<number>; peak: number } => {
    const ids = new Set<number>()
    let peak = 0
    let f = 0
    for (let i = 0; i <= upTo; i++) {
      while (f < freed.length && freed[f].at <= i) ids.delete(freed[f++].messageId)
      if (i === upTo) break
      const packet = client.received[i]
      if (packet.cmd === 'publish' && packet.qos > 0) {
        ids.add(packet.messageId!)
        peak = Math.max(peak, ids.size)
      }
    }
    return { ids, peak }
  }
  const connack = await client.connect({
    clientId: options.clientId ?? id('rm2'),
    clean: options.clean ?? true,
    properties: { receiveMaximum: RECEIVE_MAXIMUM, ...(options.sessionExpiry ? { sessionExpiryInterval: options.sessionExpiry } : {}) },
  })
  assert.equal(connack.reasonCode, 0)
  return {
    client,
    publishes: () => client.received.filter((p): p is Publish => p.cmd === 'publish'),
    peak: () => replay(client.received.length).peak,
    outstanding: () => [...replay(client.received.length).ids],
    async ackOldest() {
      const messageId = replay(client.received.length).ids.values().next().value as number
      const packet = client.received.find((p): p is Publish => p.cmd === 'publish' && p.messageId === messageId)!
      if (packet.qos === 1) {
        freed.push({ messageId, at: client.received.length })
        client.send({ cmd: 'puback', messageId })
        return
      }
      const from = client.received.length
      client.send({ cmd: 'pubrec', messageId })
      await client.waitForPacket((p) => p.cmd === 'pubrel' && p.messageId === messageId && client.received.indexOf(p) >= from)
      // QoS 2: the quota comes back with our PUBCOMP [MQTT-4.9.0-2].
      freed.push({ messageId, at: client.received.length })
      client.send({ cmd: 'pubcomp', messageId })
    },
  }
}

async function subscribe(client: RawClient, subscriptions: { topic: string; qos: 0 | 1 | 2 }[]): Promise<void> {
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions } as Packet)
  await client.waitFor('suback')
}

const publish = (topic: string, qos: 0 | 1 | 2, messageId: number, payload: string, retain = false): Packet =>
  ({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, messageId: qos > 0 ? messageId : undefined, retain, dup: false }) as Packet

/** A raw publisher that sends `count` messages in one write and waits for their acknowledgements. */
async function publishBurst(version: 4 | 5, topic: string, qos: 1 | 2, count: number, retain = false): Promise<void> {
  const pub = await rawClient(port, version)
  open.push(pub)
  await pub.connect({ clientId: id(`pub${version}`) })
  pub.sendRaw(Buffer.concat(Array.from({ length: count }, (_, i) => encode(publish(topic, qos, i + 1, `m${i}`, retain), version))))
  if (qos === 1) await pub.waitFor('puback', (p) => p.messageId === count)
  else {
    for (let i = 1; i <= count; i++) await pub.waitFor('pubrec', (p) => p.messageId === i)
    for (let i = 1; i <= count; i++) pub.send({ cmd: 'pubrel', messageId: i })
    await pub.waitFor('pubcomp', (p) => p.messageId === count)
  }
  pub.destroy()
}

/** Waits until the window is full and stays so, then acknowledges one at a time until `total` arrived. */
async function drainInOrder(sub: Withholding, total: number): Promise<void> {
  await sub.client.waitForPacket(() => sub.publishes().length >= RECEIVE_MAXIMUM)
  await sleep(SETTLE_MS)
  assert.equal(sub.outstanding().length, RECEIVE_MAXIMUM, `${RECEIVE_MAXIMUM} outstanding before any acknowledgement`)
  while (sub.publishes().length < total) {
    const before = sub.publishes().length
    await sub.ackOldest()
    await sub.client.waitForPacket(() => sub.publishes().length > before, 5_000)
  }
  await sleep(SETTLE_MS)
  assert.equal(sub.publishes().length, total, 'every message arrived, once')
  assert.ok(sub.peak() <= RECEIVE_MAXIMUM, `at most ${RECEIVE_MAXIMUM} QoS 1/2 PUBLISH packets outstanding, saw ${sub.peak()}`)
}

for (const version of [4, 5] as const) {
  test(`QoS 1 from a ${version === 5 ? '5.0' : '3.1.1'} publisher (the broker's own PUBLISH path): never more than the subscriber's Receive Maximum outstanding`, async () => {
    const topic = `rm2/${id('live')}`
    const sub = await withholding()
    await subscribe(sub.client, [{ topic, qos: 1 }])
    await publishBurst(version, topic, 1, 10)
    await drainInOrder(sub, 10)
    assert.deepEqual(sub.publishes().map((p) => p.payload.toString()), Array.from({ length: 10 }, (_, i) => `m${i}`), 'in order [MQTT-4.6.0-6]')
  })
}

test('QoS 2: never more than the Receive Maximum between PUBLISH and PUBCOMP', async () => {
  const topic = `rm2/${id('qos2')}`
  const sub = await withholding()
  await subscribe(sub.client, [{ topic, qos: 2 }])
  await publishBurst(5, topic, 2, 8)
  await drainInOrder(sub, 8)
})

test('retained messages sent on SUBSCRIBE wait for the window too', async () => {
  const prefix = `rm2/${id('retained')}`
  for (let i = 0; i < 6; i++) await publishBurst(4, `${prefix}/${i}`, 1, 1, true)
  const sub = await withholding()
  await subscribe(sub.client, [{ topic: `${prefix}/+`, qos: 1 }])
  await drainInOrder(sub, 6)
})

test('overlapping and shared subscriptions: one window for every copy', async () => {
  const topic = `rm2/${id('overlap')}`
  const sub = await withholding()
  await subscribe(sub.client, [{ topic, qos: 1 }, { topic: 'rm2/+', qos: 1 }, { topic: `$share/g/${topic}`, qos: 1 }])
  await publishBurst(4, topic, 1, 5)
  // One copy per message for the ordinary subscriptions, one for the group: 10 in all.
  await drainInOrder(sub, 10)
})

test('a resumed session\'s queued messages wait for the window', async () => {
  const topic = `rm2/${id('resume')}`
  const clientId = id('resume')
  const first = await withholding({ clientId, sessionExpiry: 600 })
  await subscribe(first.client, [{ topic, qos: 1 }])
  first.client.send({ cmd: 'disconnect' })
  await first.client.closed()
  await publishBurst(4, topic, 1, 8)
  const resumed = await withholding({ clientId, clean: false, sessionExpiry: 600 })
  await drainInOrder(resumed, 8)
})

test('mosquitto_sub with receive-maximum 2 gets every QoS 2 message of a burst (libmosquitto counts its quota)', async () => {
  const topic = `rm2/${id('mosq')}`
  const sub = run('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-t', topic, '-q', '2', '-D', 'connect', 'receive-maximum', String(RECEIVE_MAXIMUM), '-C', '20', '-W', '20'])
  await sleep(700)
  await publishBurst(4, topic, 1, 10)
  await publishBurst(5, topic, 2, 10)
  const result = await sub
  assert.equal(result.code, 0, result.stderr)
  assert.equal(result.stdout.trim().split('\n').length, 20)
})

test('Paho (Python) with ReceiveMaximum 2 gets every message of a burst', async () => {
  const topic = `rm2/${id('paho')}`
  const paho = runPaho({ port, version: 5, connectProperties: { ReceiveMaximum: RECEIVE_MAXIMUM }, subscribe: [[topic, 2]], expect: 20, timeout: 20 })
  await paho.waitFor((e) => e.event === 'subscribed')
  await publishBurst(4, topic, 1, 10)
  await publishBurst(5, topic, 2, 10)
  const events = await paho.finished
  assert.equal(events.filter((e) => e.event === 'message').length, 20)
  assert.equal(events.filter((e) => e.event === 'error').length, 0, JSON.stringify(events))
})
