import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { keepAliveVerdict } from '../../broker/limits/index.js'
import { TokenBucket } from '../../broker/limits/token-bucket.js'
import { validateConfig } from '../../broker/config/load.js'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { rawClient, type RawClient } from '../helpers/raw-client.js'
import { METRICS_ADMIN, metricValue, scrapeMetrics } from '../helpers/metrics.js'
import { runPaho } from '../helpers/paho.js'

/*
 * Limits that protect the node: over a limit a client gets the protocol's reason code, the node
 * logs why and counts it, and everyone else keeps being served.
 */

const listener = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'mqtt', host: '127.0.0.1', port: 0, ...extra })

async function start(config: Record<string, unknown>): Promise<RunningFleetmq> {
  return startFleetmq({ users: [METRICS_ADMIN], config: { allowAnonymous: true, listeners: [listener()], ...config } })
}

/** A bystander that pub/subs through the whole test: proof the node kept serving. */
async function assertStillServes(port: number): Promise<void> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  await client.subscribeAsync('bystander/check', { qos: 1 })
  const got = new Promise<string>((resolve) => client.on('message', (_t, p) => resolve(p.toString())))
  await client.publishAsync('bystander/check', 'ok', { qos: 1 })
  assert.equal(await got, 'ok')
  await client.endAsync()
}

test('keepAliveVerdict: 0 is accepted unless configured otherwise; non-zero values outside the bounds refuse 3.1.1 and are bounded for 5.0', () => {
  const limits = { minKeepAlive: 10, maxKeepAlive: 300, serverKeepAlive: 0, refuseKeepAliveZero: false }
  assert.deepEqual(keepAliveVerdict(60, 4, limits), { verdict: 'accept' })
  assert.deepEqual(keepAliveVerdict(0, 4, limits), { verdict: 'accept' }, '3.1.1 §3.1.2.10: 0 turns keep-alive off')
  assert.deepEqual(keepAliveVerdict(0, 3, limits), { verdict: 'accept' })
  assert.deepEqual(keepAliveVerdict(0, 5, limits), { verdict: 'accept' })
  assert.equal(keepAliveVerdict(600, 4, limits).verdict, 'refuse')
  assert.equal(keepAliveVerdict(5, 4, limits).verdict, 'refuse')
  assert.deepEqual(keepAliveVerdict(600, 5, limits), { verdict: 'serverKeepAlive', value: 300 })
  assert.deepEqual(keepAliveVerdict(5, 5, limits), { verdict: 'serverKeepAlive', value: 10 })
  const behindNlb = { ...limits, serverKeepAlive: 300 }
  assert.deepEqual(keepAliveVerdict(0, 5, behindNlb), { verdict: 'serverKeepAlive', value: 300 })
  assert.deepEqual(keepAliveVerdict(0, 4, behindNlb), { verdict: 'accept' }, 'serverKeepAlive concerns 5.0 only')
  const strict = { ...limits, refuseKeepAliveZero: true }
  assert.match((keepAliveVerdict(0, 4, strict) as { reason: string }).reason, /keep-alive 0 \(disabled\) is refused \(limits\.refuseKeepAliveZero/)
  assert.deepEqual(keepAliveVerdict(0, 5, strict), { verdict: 'accept' }, '5.0 clients are never refused')
})

test('TokenBucket allows a burst of one second, then the rate', () => {
  const bucket = new TokenBucket(2, 0)
  assert.equal(bucket.take(0), true)
  assert.equal(bucket.take(0), true)
  assert.equal(bucket.take(0), false)
  assert.equal(bucket.take(500), true)
  assert.equal(bucket.take(500), false)
})

test('maxConnections: CONNACK 0x97 Quota exceeded to 5.0, 3 Server unavailable to 3.1.1; a slot frees when a client leaves', async () => {
  const broker = await start({ limits: { maxConnections: 2 } })
  const open: RawClient[] = []
  try {
    const port = broker.ports.mqtt
    for (let i = 0; i < 2; i++) {
      const client = await rawClient(port, 5)
      assert.equal((await client.connect({ clientId: `held-${i}` })).reasonCode, 0)
      open.push(client)
    }
    const v5 = await rawClient(port, 5)
    const refused = await v5.connect({ clientId: 'third-v5' })
    assert.equal(refused.reasonCode, 0x97)
    assert.match(String(refused.properties?.reasonString), /at most 2 connections \(limits\.maxConnections\)/)
    await v5.closed()

    const v4 = await rawClient(port, 4)
    assert.equal((await v4.connect({ clientId: 'third-v4' })).returnCode, 3)
    await v4.closed()

    // MQTT.js reports the reason code to the application.
    await assert.rejects(mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 }), /Quota exceeded/i)

    const line = await broker.waitForLog((l) => l.limit === 'maxConnections')
    assert.equal(line.level, 40)
    assert.match(line.msg, /refused third-v5 from 127\.0\.0\.1: this node serves at most 2 connections/)
    assert.ok(metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'maxConnections' }) >= 2)

    // The held clients were never touched; when one leaves, its slot is free again.
    open[0].send({ cmd: 'pingreq' })
    await open[0].waitFor('pingresp')
    open.shift()?.send({ cmd: 'disconnect' })
    let accepted = false
    for (let attempt = 0; attempt < 20 && !accepted; attempt++) {
      const next = await rawClient(port, 5)
      accepted = (await next.connect({ clientId: 'after-leave' })).reasonCode === 0
      if (accepted) open.push(next)
      else await new Promise((r) => setTimeout(r, 100))
    }
    assert.ok(accepted, 'a client connects once a slot is free')
  } finally {
    for (const client of open) client.destroy()
    assert.equal(await broker.stop(), 0)
  }
})

test('per-listener maxConnections refuses on that listener only', async () => {
  const broker = await start({ listeners: [listener({ name: 'small', maxConnections: 1 }), listener({ name: 'big' })] })
  const open: RawClient[] = []
  try {
    const first = await rawClient(broker.ports.small, 5)
    assert.equal((await first.connect()).reasonCode, 0)
    open.push(first)
    const second = await rawClient(broker.ports.small, 5)
    const refused = await second.connect()
    assert.equal(refused.reasonCode, 0x97)
    assert.match(String(refused.properties?.reasonString), /listener small serves at most 1 connections \(maxConnections\)/)
    const v4 = await rawClient(broker.ports.small, 4)
    assert.equal((await v4.connect()).returnCode, 3)
    await assertStillServes(broker.ports.big)
    assert.ok(metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'listenerMaxConnections' }) >= 2)
  } finally {
    for (const client of open) client.destroy()
    await broker.stop()
  }
})

test('connectRate: past the listener rate, CONNACK 0x9F Connection rate exceeded (5.0) / 3 (3.1.1)', async () => {
  const broker = await start({ listeners: [listener({ name: 'gate', connectRate: 1 }), listener({ name: 'open' })] })
  try {
    const port = broker.ports.gate
    const clients = await Promise.all(Array.from({ length: 6 }, (_, i) => rawClient(port, i % 2 === 0 ? 5 : 4)))
    const acks = await Promise.all(clients.map((c) => c.connect()))
    const v5Codes = acks.filter((_, i) => i % 2 === 0).map((a) => a.reasonCode)
    const v4Codes = acks.filter((_, i) => i % 2 === 1).map((a) => a.returnCode)
    // A bucket of one token a second: at most two of six simultaneous CONNECTs get through.
    assert.ok([...v5Codes, ...v4Codes].filter((c) => c === 0).length <= 2, `accepted: ${JSON.stringify({ v5Codes, v4Codes })}`)
    assert.ok(v5Codes.includes(0x9f), `5.0 codes ${v5Codes}`)
    assert.ok(v4Codes.includes(3), `3.1.1 codes ${v4Codes}`)
    const refused = acks.find((a) => a.reasonCode === 0x9f)
    assert.match(String(refused?.properties?.reasonString), /listener gate accepts 1 connections a second \(connectRate\)/)
    await broker.waitForLog((l) => l.limit === 'connectRate' && /connectRate/.test(l.msg))
    // The other listener is not rate limited by the first one's storm.
    await assertStillServes(broker.ports.open)
    for (const client of clients) client.destroy()
  } finally {
    await broker.stop()
  }
})

test('keep-alive bounds: 3.1.1 above 300 s is refused with 3 and a log line that says why; 5.0 gets Server Keep Alive; 0 as configured', async () => {
  const broker = await start({ limits: { minKeepAlive: 10, maxKeepAlive: 300, serverKeepAlive: 240, refuseKeepAliveZero: true } })
  try {
    const port = broker.ports.mqtt
    const old = await rawClient(port, 4)
    assert.equal((await old.connect({ clientId: 'sleepy-v4', keepalive: 600 })).returnCode, 3)
    await old.closed()
    const line = await broker.waitForLog((l) => l.limit === 'keepAlive')
    assert.match(line.msg, /keep-alive 600 s above the maximum 300 s \(limits\.maxKeepAlive; the AWS NLB drops idle TLS connections after 350 s\)/)

    // Opted in with limits.refuseKeepAliveZero: 3.1.1 clients asking for 0 are refused.
    const disabled = await rawClient(port, 4)
    assert.equal((await disabled.connect({ keepalive: 0 })).returnCode, 3)
    const short = await rawClient(port, 4)
    assert.equal((await short.connect({ keepalive: 5 })).returnCode, 3)

    const v5 = await rawClient(port, 5)
    const ack = await v5.connect({ clientId: 'sleepy-v5', keepalive: 600 })
    assert.equal(ack.reasonCode, 0)
    assert.equal(ack.properties?.serverKeepAlive, 300)
    const quick = await rawClient(port, 5)
    const quickAck = await quick.connect({ keepalive: 5 })
    assert.equal(quickAck.reasonCode, 0)
    assert.equal(quickAck.properties?.serverKeepAlive, 10)
    // A 5.0 client asking for 0 gets limits.serverKeepAlive [MQTT-3.2.2-21], as Paho reads it too.
    const none = await rawClient(port, 5)
    const noneAck = await none.connect({ keepalive: 0 })
    assert.equal(noneAck.reasonCode, 0)
    assert.equal(noneAck.properties?.serverKeepAlive, 240)
    const paho = await runPaho({ port, keepalive: 0, clientId: 'paho-ka0', hold: 0.1 }).finished
    assert.equal(paho.find((e) => e.event === 'connack')?.properties?.ServerKeepAlive, 240)

    // MQTT.js 3.1.1 sees the refusal as "Server unavailable", not a protocol error.
    await assert.rejects(mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, keepalive: 600, reconnectPeriod: 0 }), /Server unavailable/i)
    await assertStillServes(port)
    for (const c of [v5, quick, none]) c.destroy()
  } finally {
    await broker.stop()
  }
})

test('limits.serverKeepAlive outside minKeepAlive..maxKeepAlive is refused with the bounds named', () => {
  const checked = validateConfig({ limits: { maxKeepAlive: 300, serverKeepAlive: 600 } })
  assert.equal(checked.ok, false)
  assert.match((checked as { errors: string[] }).errors.join('\n'), /limits\.serverKeepAlive: must be 0 \(none\) or between limits\.minKeepAlive \(0\) and limits\.maxKeepAlive \(300\)/)
  const defaults = validateConfig({})
  assert.ok(defaults.ok)
  assert.deepEqual([defaults.config.limits.serverKeepAlive, defaults.config.limits.refuseKeepAliveZero], [0, false], 'Keep Alive 0 accepted by default')
})

test('client identifier longer than maxClientIdLength: 0x85 (5.0) / 2 Identifier rejected (3.1.1)', async () => {
  const broker = await start({ limits: { maxClientIdLength: 23 } })
  try {
    const id = 'x'.repeat(24)
    const v5 = await rawClient(broker.ports.mqtt, 5)
    assert.equal((await v5.connect({ clientId: id })).reasonCode, 0x85)
    const v4 = await rawClient(broker.ports.mqtt, 4)
    assert.equal((await v4.connect({ clientId: id })).returnCode, 2)
    await assertStillServes(broker.ports.mqtt)
  } finally {
    await broker.stop()
  }
})

test('topic longer than maxTopicLength: PUBLISH gets DISCONNECT 0x90 and nothing after it; SUBSCRIBE is refused in the SUBACK', async () => {
  const broker = await start({ limits: { maxTopicLength: 32 } })
  try {
    const port = broker.ports.mqtt
    const long = `t/${'x'.repeat(40)}`

    const sub = await rawClient(port, 5)
    await sub.connect()
    sub.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: long, qos: 1 }, { topic: 'ok/#', qos: 1 }] })
    const suback = await sub.waitFor('suback')
    // 0x8F Topic Filter invalid [§3.9.3]; the short one is granted.
    assert.deepEqual(suback.granted, [0x8F, 1])

    const v5 = await rawClient(port, 5)
    await v5.connect()
    v5.send({ cmd: 'publish', topic: long, payload: Buffer.from('x'), qos: 1, messageId: 3, retain: false, dup: false })
    const disconnect = await v5.waitFor('disconnect')
    assert.equal(disconnect.reasonCode, 0x90)
    assert.match(String(disconnect.properties?.reasonString), /topic name of 42 bytes is longer than 32 \(limits\.maxTopicLength\)/)
    await v5.closed()
    assert.equal(v5.received.at(-1)?.cmd, 'disconnect', 'no PUBACK after the DISCONNECT [MQTT-3.14.4-1]')

    const v4 = await rawClient(port, 4)
    await v4.connect()
    v4.send({ cmd: 'publish', topic: long, payload: Buffer.from('x'), qos: 0, retain: false, dup: false })
    await v4.closed()

    // Logs are throttled to one line per limit per second; the counter sees every hit.
    await broker.waitForLog((l) => l.limit === 'maxTopicLength' && /longer than 32 \(limits\.maxTopicLength\)/.test(l.msg))
    assert.ok(metricValue(await scrapeMetrics(broker), 'fleetmq_limit_hits_total', { limit: 'maxTopicLength' }) >= 3)
    await assertStillServes(port)
    sub.destroy()
  } finally {
    await broker.stop()
  }
})
