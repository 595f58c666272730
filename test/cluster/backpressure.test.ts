import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import mqttPacket from 'mqtt-packet'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { startFleetmq } from '../helpers/fleetmq.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { getJson, stopAll, tokenOf, waitUntil } from './nodes.js'

/*
 * Backpressure end to end (issue 16): a PUBACK means the cluster owns the message, and the cluster
 * must not own more than it delivers. A subscriber on node B stops acknowledging; a QoS 1
 * publisher on node A with every message in flight at once. Node A must stop acknowledging once
 * node B's backlog is over its bound (`cluster.overloadQueuedMessages`), not acknowledge all of
 * them while B queues them in memory (before: all 3,000 acknowledged within a second). Once the
 * subscriber acknowledges again, every acknowledged message arrives, none twice.
 */

const MESSAGES = 3_000
const BOUND = 200

let redis: RedisServer
let a: RunningFleetmq
let b: RunningFleetmq

before(async () => {
  redis = await startRedis()
  // maxQueued 0: the subscriber is held back here, not disconnected by the per-client limit.
  const config = { cluster: { overloadQueuedMessages: BOUND }, limits: { maxQueued: 0 } }
  const start = (): Promise<RunningFleetmq> => startFleetmq({ args: ['--allow-anonymous', '--redis', redis.url, '--mqtt', '127.0.0.1:0'], config, users: [METRICS_ADMIN] })
  a = await start()
  b = await start()
})

after(async () => {
  await stopAll([a, b])
  await stopRedis(redis)
})

test('a subscriber on node B that stops acknowledging holds back the PUBACKs of node A\'s publisher; nothing acknowledged is lost', { timeout: 90_000 }, async () => {
  const sub = await rawConnect(b.ports.mqtt, { clientId: 'bp-sub' }, 4)
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bp/#', qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  const pub = await rawConnect(a.ports.mqtt, { clientId: 'bp-pub' }, 4)
  // The route reaches node A: a probe goes through before counting starts.
  await waitUntil('the route from A to B', () => {
    pub.send({ cmd: 'publish', topic: 'bp/probe', payload: Buffer.from('probe'), qos: 0, retain: false, dup: false })
    return sub.packets.some((p) => p.cmd === 'publish' && String(p.payload) === 'probe')
  })

  const acked = new Set<number>()
  pub.socket.on('data', () => {
    for (const p of pub.packets) if (p.cmd === 'puback') acked.add(p.messageId!)
  })
  const frames = Array.from({ length: MESSAGES }, (_, i) => mqttPacket.generate({ cmd: 'publish', topic: 'bp/x', payload: Buffer.from(String(i)), qos: 1, messageId: i + 1, retain: false, dup: false }, { protocolVersion: 4 }))
  // Open loop, as devices are: 50 messages every 10 ms, whatever comes back. (aedes routes every
  // packet of one socket read at once; held messages start with the next read.)
  for (let i = 0; i < MESSAGES; i += 50) {
    pub.socket.write(Buffer.concat(frames.slice(i, i + 50)))
    await new Promise((resolve) => setTimeout(resolve, 10))
  }

  // Node B holds a window (100) and its bound; node A may have more on the way when B reports.
  await new Promise((resolve) => setTimeout(resolve, 4_000))
  for (const p of pub.packets) if (p.cmd === 'puback') acked.add(p.messageId!)
  const ackedWhileStuck = acked.size
  const status = (await getJson(a.mgmtPort, '/api/v1/cluster/status', tokenOf(a))).body as { backend?: { fanout?: { held?: number } } }
  console.log(`# backpressure: ${ackedWhileStuck} of ${MESSAGES} acknowledged while the subscriber acknowledged nothing (bound ${BOUND}); held on A: ${status.backend?.fanout?.held}`)
  assert.ok(ackedWhileStuck < MESSAGES / 2, `node A acknowledged ${ackedWhileStuck} of ${MESSAGES} messages its subscriber could not take`)
  assert.ok((metricValue(await scrapeMetrics(b), 'fleetmq_congestions_total') || 0) >= 1, 'node B counted its congestion')

  // The subscriber acknowledges from now on: everything arrives, once.
  const ack = (): void => {
    for (const p of sub.packets) {
      if (p.cmd === 'publish' && p.qos === 1 && !(p as { acked?: boolean }).acked) {
        ;(p as { acked?: boolean }).acked = true
        sub.send({ cmd: 'puback', messageId: p.messageId! })
      }
    }
  }
  ack()
  sub.socket.on('data', () => setImmediate(ack))
  await waitUntil('every message acknowledged to the publisher', () => {
    for (const p of pub.packets) if (p.cmd === 'puback') acked.add(p.messageId!)
    return acked.size === MESSAGES
  }, 60_000)
  const payloads = (): string[] => sub.packets.flatMap((p) => (p.cmd === 'publish' && p.topic === 'bp/x' ? [String(p.payload)] : []))
  await waitUntil('every acknowledged message delivered', () => new Set(payloads()).size === MESSAGES, 30_000)
  await new Promise((resolve) => setTimeout(resolve, 500))
  const got = payloads()
  assert.equal(got.length - new Set(got).size, 0, `${got.length - new Set(got).size} duplicates`)
  assert.deepEqual(got, Array.from({ length: MESSAGES }, (_, i) => String(i)), 'in order')
  pub.destroy()
  sub.destroy()
})
