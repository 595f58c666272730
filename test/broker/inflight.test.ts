import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import type { Packet } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { encode, rawClient, type ProtocolVersion, type RawClient } from '../helpers/raw-client.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'

/*
 * The outbound in-flight window and its queue (broker/mqtt/flow-control.ts): a real node with
 * limits.maxInflight 3 and limits.maxQueued 4, raw subscribers that withhold their PUBACKs.
 */

const MAX_INFLIGHT = 3
const MAX_QUEUED = 4
/** Long enough for anything the broker would still send to arrive. */
const SETTLE_MS = 600

let broker: RunningFleetmq
let port: number
let publisher: mqtt.MqttClient
let topicCount = 0
const nextTopic = (): string => `inflight/${process.pid}/${topicCount++}`

before(async () => {
  broker = await startFleetmq({
    users: [METRICS_ADMIN],
    config: {
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      limits: { maxInflight: MAX_INFLIGHT, maxQueued: MAX_QUEUED },
    },
  })
  port = broker.ports.mqtt
  publisher = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
})

after(async () => {
  await publisher?.endAsync()
  await broker?.stop()
})

type Publish = Extract<Packet, { cmd: 'publish' }>
const publishesOf = (client: RawClient): Publish[] => client.received.filter((p): p is Publish => p.cmd === 'publish')

async function subscriber(version: ProtocolVersion, topic: string, properties?: Record<string, number>): Promise<RawClient> {
  const client = await rawClient(port, version)
  const connack = await client.connect(properties ? { properties } : {})
  assert.equal(version === 5 ? connack.reasonCode : connack.returnCode, 0)
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
  await client.waitFor('suback')
  return client
}

async function publish(topic: string, count: number, qos: 0 | 1 = 1, prefix = 'm'): Promise<void> {
  for (let i = 0; i < count; i++) await publisher.publishAsync(topic, `${prefix}${i}`, { qos })
}

for (const version of [4, 5] as const) {
  test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: at most limits.maxInflight QoS 1 messages unacknowledged; each PUBACK lets the next one out, in order [MQTT-3.3.4-9]`, async () => {
    const topic = nextTopic()
    // A 5.0 client allowing more than the node's bound still gets the node's bound: min(10, 3).
    const sub = await subscriber(version, topic, version === 5 ? { receiveMaximum: 10 } : undefined)
    try {
      // Within maxQueued: the rest waits for the window.
      const total = MAX_INFLIGHT + MAX_QUEUED
      await publish(topic, total)
      await sub.waitFor('publish', (p) => p.payload.toString() === `m${MAX_INFLIGHT - 1}`)
      await sleep(SETTLE_MS)
      assert.equal(publishesOf(sub).length, MAX_INFLIGHT, 'no more than maxInflight before any PUBACK')

      sub.send({ cmd: 'puback', messageId: publishesOf(sub)[0].messageId! })
      await sub.waitFor('publish', (p) => p.payload.toString() === `m${MAX_INFLIGHT}`)
      await sleep(SETTLE_MS)
      assert.equal(publishesOf(sub).length, MAX_INFLIGHT + 1, 'one PUBACK frees one slot')

      for (let acked = 1; acked < total; acked++) {
        const next = await sub.waitFor('publish', (p) => publishesOf(sub).indexOf(p) === acked)
        sub.send({ cmd: 'puback', messageId: next.messageId! })
      }
      assert.deepEqual(publishesOf(sub).map((p) => p.payload.toString()), Array.from({ length: total }, (_, i) => `m${i}`))
    } finally {
      sub.destroy()
    }
  })
}

test('a 5.0 client\'s smaller Receive Maximum wins over limits.maxInflight', async () => {
  const topic = nextTopic()
  const sub = await subscriber(5, topic, { receiveMaximum: 2 })
  try {
    await publish(topic, 5)
    await sub.waitFor('publish', (p) => p.payload.toString() === 'm1')
    await sleep(SETTLE_MS)
    assert.equal(publishesOf(sub).length, 2)
  } finally {
    sub.destroy()
  }
})

test('QoS 0 messages are not held back by a full window (§4.9: the server MAY keep sending QoS 0)', async () => {
  const topic = nextTopic()
  const sub = await subscriber(4, topic)
  try {
    await publish(topic, MAX_INFLIGHT)
    await sub.waitFor('publish', (p) => p.payload.toString() === `m${MAX_INFLIGHT - 1}`)
    await publish(topic, 1, 0, 'zero')
    const zero = await sub.waitFor('publish', (p) => p.payload.toString() === 'zero0')
    assert.equal(zero.qos, 0)
  } finally {
    sub.destroy()
  }
})

for (const version of [4, 5] as const) {
  test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: past limits.maxQueued messages waiting for the window the client is disconnected${version === 5 ? ' with 0x97 Quota exceeded' : ''} and the limit counted`, async () => {
    const hits = async (): Promise<number> => {
      const value = metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'maxQueued' })
      return Number.isNaN(value) ? 0 : value // no sample until the first hit
    }
    const before = await hits()
    const topic = nextTopic()
    const sub = await subscriber(version, topic)
    const bystander = await subscriber(version, `${topic}/other`)
    try {
      // maxInflight in flight and maxQueued waiting: still connected.
      await publish(topic, MAX_INFLIGHT + MAX_QUEUED)
      await sleep(SETTLE_MS)
      assert.equal(sub.socket.destroyed, false, 'within maxQueued the client stays connected')
      assert.equal(publishesOf(sub).length, MAX_INFLIGHT)

      await publish(topic, 1, 1, 'over')
      await sub.closed()
      if (version === 5) {
        const disconnect = await sub.waitFor('disconnect')
        assert.equal(disconnect.reasonCode, 0x97)
        assert.match(String(disconnect.properties?.reasonString), /maxQueued/)
      } else {
        assert.equal(sub.received.some((p) => p.cmd === 'disconnect'), false, '3.1.1 has no server DISCONNECT')
      }
      assert.equal(await hits() - before, 1)
      await broker.waitForLog((line) => line.limit === 'maxQueued' && /maxQueued/.test(line.msg))

      // Everyone else is served.
      await publisher.publishAsync(`${topic}/other`, 'still here', { qos: 1 })
      const got = await bystander.waitFor('publish')
      assert.equal(got.payload.toString(), 'still here')
    } finally {
      sub.destroy()
      bystander.destroy()
    }
  })
}

test('limits.maxQueued does not bound the packets a client sends right behind its CONNECT (aedes queueLimit keeps its default)', async () => {
  const topic = nextTopic()
  const client = await rawClient(port, 4)
  try {
    // CONNECT, SUBSCRIBE and more than maxQueued PUBLISH in one write, before any CONNACK: with
    // queueLimit = maxQueued aedes closed such a connection ('Client queue limit reached').
    const packets = [
      encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: `pipelined-${process.pid}`, clean: true, keepalive: 60 }, 4),
      encode({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }, 4),
      ...Array.from({ length: MAX_QUEUED * 3 }, (_, i) => encode({ cmd: 'publish', topic, payload: Buffer.from(`p${i}`), qos: 1, messageId: 100 + i, retain: false, dup: false }, 4)),
    ]
    client.sendRaw(Buffer.concat(packets))
    assert.equal((await client.waitFor('connack')).returnCode, 0)
    await client.waitFor('suback')
    // Every PUBLISH was handled: each gets its PUBACK.
    for (let i = 0; i < MAX_QUEUED * 3; i++) await client.waitFor('puback', (p) => p.messageId === 100 + i)
    assert.equal(client.socket.destroyed, false)
  } finally {
    client.destroy()
  }
})
