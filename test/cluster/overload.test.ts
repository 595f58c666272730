import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import mqttPacket from 'mqtt-packet'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { rawConnect, type RawClient } from '../helpers/raw-mqtt.js'
import { redisCli, startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { startFleetmq } from '../helpers/fleetmq.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'
import { stopAll, waitUntil } from './nodes.js'

/*
 * Overload does not collapse: publishers on node A flood QoS 0 (as fast as TCP lets them) to a
 * subscriber on node B that reads slowly. The nodes' memory stays bounded: what cannot be
 * delivered is dropped and counted (`overload`), instead of queueing without bound (measured
 * with plain aedes + mqemitter-redis: 248 MB in 12 s).
 */

let redis: RedisServer
let a: RunningFleetmq
let b: RunningFleetmq

const rssMb = (node: RunningFleetmq): number => {
  const line = readFileSync(`/proc/${node.process.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:')) ?? ''
  return Number(/(\d+)/.exec(line)?.[1] ?? Number.NaN) / 1024
}

before(async () => {
  redis = await startRedis()
  // A small inbound bound so that the test reaches it in seconds on a shared machine.
  const args = ['--log-level', 'info', '--mqtt', '127.0.0.1:0']
  // QoS 0 is dropped once held for 1 s (sustained overload at the scale of this test).
  const config = { cluster: { overloadBufferedBytes: 4 * 1024 * 1024, overloadPendingPublishes: 20, overloadDropQos0After: 1 } }
  const start = () => startFleetmq({ args: [...args, '--allow-anonymous', '--redis', redis.url], config, users: [METRICS_ADMIN] })
  a = await start()
  b = await start()
})

after(async () => {
  await stopAll([a, b])
  await stopRedis(redis)
})

test('a QoS 0 flood from node A to a slow subscriber on node B: memory stays bounded, drops are counted', { timeout: 60_000 }, async () => {
  const sub = await rawConnect(b.ports.mqtt, { clientId: 'slow-sub' }, 4)
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos: 0 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  await new Promise((resolve) => setTimeout(resolve, 500))
  // Reads in short bursts: a consumer slower than the publishers.
  let delivered = 0
  sub.socket.on('data', (chunk: Buffer) => { delivered += chunk.length })
  const slowRead = setInterval(() => { sub.socket.resume(); setTimeout(() => sub.socket.pause(), 5) }, 100)

  const baseline = { a: rssMb(a), b: rssMb(b) }
  const pubs: RawClient[] = []
  for (let i = 0; i < 3; i++) pubs.push(await rawConnect(a.ports.mqtt, { clientId: `flood-${i}` }, 4))
  const payload = Buffer.alloc(256, 'x')
  let sent = 0
  let stop = false
  const frame = (i: number): Buffer => mqttPacket.generate({ cmd: 'publish', topic: `flood/${i}`, payload, qos: 0, retain: false, dup: false }, { protocolVersion: 4 })
  const floods = pubs.map((pub, i) => new Promise<void>((resolve) => {
    const packet = frame(i)
    const pump = (): void => {
      // Respects TCP backpressure: writes until the socket buffer is full, then waits for drain.
      while (!stop) {
        sent++
        if (!pub.socket.write(packet)) return void pub.socket.once('drain', pump)
      }
      resolve()
    }
    pump()
  }))
  let peak = { a: 0, b: 0 }
  const sampler = setInterval(() => { peak = { a: Math.max(peak.a, rssMb(a)), b: Math.max(peak.b, rssMb(b)) } }, 250)
  await new Promise((resolve) => setTimeout(resolve, 8_000))
  stop = true
  await Promise.race([Promise.all(floods), new Promise((resolve) => setTimeout(resolve, 2_000))])
  clearInterval(sampler)
  clearInterval(slowRead)
  // The subscriber now reads everything still on its way (socket buffers, messages held by
  // backpressure), so that what it never gets is what was dropped.
  sub.socket.resume()
  await new Promise((resolve) => setTimeout(resolve, 3_000))

  // Whichever bound acted first (this node's overload bound, or the slow-consumer limit on the
  // subscriber's connection), it is counted under fleetmq_messages_dropped_total.
  const dropped: Record<string, number> = {}
  for (const node of [a, b]) {
    const text = await scrapeMetrics(node)
    for (const reason of ['overload', 'slowConsumer', 'stuckConsumer', 'queueFull']) dropped[reason] = (dropped[reason] ?? 0) + (metricValue(text, 'fleetmq_messages_dropped_total', { reason }) || 0)
  }
  const drops = Object.values(dropped).reduce((x, y) => x + y, 0)
  const growth = { a: Math.round(peak.a - baseline.a), b: Math.round(peak.b - baseline.b) }
  console.log(`# overload: ${sent} QoS 0 messages written by 3 publishers in 8 s (${Math.round(sent / 8)} msg/s), ${drops} dropped (${JSON.stringify(dropped)}), ${Math.round(delivered / (payload.length + 10))} delivered to the slow subscriber; RSS growth A +${growth.a} MB, B +${growth.b} MB`)
  assert.ok(growth.a < 150, `node A RSS grew ${growth.a} MB`)
  assert.ok(growth.b < 150, `node B RSS grew ${growth.b} MB`)
  // Since backpressure holds the publishers, QoS 0 is dropped only after a sustained hold: a
  // subscriber that keeps up with the held rate may take everything. Either way, what it did not
  // get was dropped and counted, nothing vanished (10 %: the per-message size is estimated, and a socket may still hold some).
  const deliveredMessages = Math.round(delivered / (payload.length + 10))
  assert.ok(deliveredMessages + drops >= 0.9 * sent,
    `what the slow subscriber could not take was dropped and counted (${drops} dropped, ${deliveredMessages} of ${sent} delivered)`)
  for (const node of [a, b]) assert.equal(node.process.exitCode, null)

  // The nodes still serve: a new subscriber on B gets a new message from A.
  for (const c of [...pubs, sub]) c.destroy()
  const fresh = await rawConnect(b.ports.mqtt, { clientId: 'after-sub' }, 4)
  fresh.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'after/#', qos: 0 }] })
  await fresh.waitFor((p) => p.cmd === 'suback')
  const check = await rawConnect(a.ports.mqtt, { clientId: 'after' }, 4)
  await waitUntil('delivery after the flood', () => {
    check.send({ cmd: 'publish', topic: 'after/x', payload: Buffer.from('ok'), qos: 0, retain: false, dup: false })
    return fresh.packets.some((p) => p.cmd === 'publish' && String(p.payload) === 'ok')
  }, 20_000)
  for (const c of [check, fresh]) c.destroy()
})

test('Redis stalls (CLIENT PAUSE WRITE) under a burst beyond the pending bound: the burst is held, not dropped; a QoS 1 publisher waits and is served after', { timeout: 60_000 }, async () => {
  const sub = await rawConnect(b.ports.mqtt, { clientId: 'stall-sub' }, 4)
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'stall/#', qos: 1 }] })
  await sub.waitFor((p) => p.cmd === 'suback')
  const before = metricValue(await scrapeMetrics(a), 'fleetmq_messages_dropped_total', { reason: 'overload' }) || 0
  const baseline = rssMb(a)
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '4000', 'WRITE')
  // aedes routes one message per publisher at a time: 40 publishers exceed the bound of 20 at once.
  // Issue 16: a burst is held (publishers not read), never dropped; only a hold longer than
  // overloadDropQos0After without progress drops QoS 0.
  const pubs = await Promise.all(Array.from({ length: 40 }, (_, i) => rawConnect(a.ports.mqtt, { clientId: `stall-pub-${i}` }, 4)))
  const packet = mqttPacket.generate({ cmd: 'publish', topic: 'stall/0', payload: Buffer.alloc(256, 'y'), qos: 0, retain: false, dup: false }, { protocolVersion: 4 })
  for (const pub of pubs) for (let i = 0; i < 20; i++) pub.socket.write(packet)
  const qos1 = await rawConnect(a.ports.mqtt, { clientId: 'stall-qos1' }, 4)
  qos1.send({ cmd: 'publish', topic: 'stall/1', payload: Buffer.from('kept'), qos: 1, messageId: 7, retain: false, dup: false })
  // After the pause: the QoS 1 message is acknowledged and delivered, nothing crashed.
  await qos1.waitFor((p) => p.cmd === 'puback', 20_000)
  await sub.waitFor((p) => p.cmd === 'publish' && String(p.payload) === 'kept', 20_000)
  const growth = rssMb(a) - baseline
  assert.ok(growth < 150, `node A RSS grew ${Math.round(growth)} MB`)
  const dropped = (metricValue(await scrapeMetrics(a), 'fleetmq_messages_dropped_total', { reason: 'overload' }) || 0) - before
  const burst = await waitUntil('the burst delivered', () => {
    const n = sub.packets.filter((p) => p.cmd === 'publish' && p.topic === 'stall/0').length
    return n + dropped >= 800 ? n : undefined
  }, 20_000)
  console.log(`# stall: 800 QoS 0 from 40 publishers during a 4 s Redis write pause with overloadPendingPublishes 20: ${burst} delivered, ${dropped} dropped (overload); RSS A +${Math.round(growth)} MB`)
  assert.equal(dropped, 0, 'a burst is held, not dropped')
  for (const c of [sub, ...pubs, qos1]) c.destroy()
})
