import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { redisCli, startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { collect, connect, getJson, mqttUrl, startNode, stopAll, tokenOf, waitUntil } from './nodes.js'

/*
 * Redis refuses writes (`min-replicas-to-write 1` with no replica: every write answers NOREPLICAS,
 * as a primary does while its replicas are out of sync). Found by `npm start`: a node died of an
 * unhandled rejection from the will handling. The node must keep running, refuse or close what
 * it cannot store, count the failures, and serve again once Redis accepts writes.
 */

let redis: RedisServer
let node: RunningFleetmq

before(async () => {
  redis = await startRedis()
  node = await startNode({ redis: redis.url })
})

after(async () => {
  await stopAll([node])
  await stopRedis(redis)
})

/** Resolves whether the connection attempt succeeded; a refused or closed one is fine here. */
async function attempt(options: IClientOptions): Promise<MqttClient | undefined> {
  // Not connectAsync: it never settles when the broker closes the socket before CONNACK.
  const client = mqtt.connect(mqttUrl(node), { reconnectPeriod: 0, connectTimeout: 5_000, ...options })
  client.on('error', () => undefined)
  const ok = await new Promise<boolean>((resolve) => {
    client.once('connect', () => resolve(true))
    client.once('close', () => resolve(false))
  })
  if (ok) return client
  client.end(true)
  return undefined
}

async function tryConnect(options: IClientOptions): Promise<boolean> {
  const client = await attempt(options)
  client?.end(true)
  return client !== undefined
}

const backend = async (): Promise<{ persistenceErrors: number; ready: boolean }> =>
  (await getJson(node.mgmtPort, '/api/v1/cluster/status', tokenOf(node))).body.backend as { persistenceErrors: number; ready: boolean }

test('writes refused with NOREPLICAS: the node keeps running, counts the failures, serves again once writes are accepted', { timeout: 50_000 }, async () => {
  // A will with a delay stays in Redis after an abrupt close until it is published: it is how the
  // `will:undefined:` key bug showed (see below).
  const delayed = await connect(node, { protocolVersion: 5, clientId: 'wd', will: { topic: 'wills/wd', payload: Buffer.from('gone'), qos: 0, retain: false, properties: { willDelayInterval: 60 } }, properties: { sessionExpiryInterval: 120 } })
  assert.match(await redisCli(redis.port, 'LRANGE', 'will', '0', '-1'), /^will:[^:]+:wd$/m)
  assert.doesNotMatch(await redisCli(redis.port, 'LRANGE', 'will', '0', '-1'), /will:undefined:/)
  delayed.stream.destroy()
  await new Promise((resolve) => setTimeout(resolve, 300))
  // It comes back without a will: its old will must go (aedes' storeWill deleted
  // `will:undefined:wd`, leaving `will:<node>:wd` to be published if this node ever died).
  const back = await connect(node, { protocolVersion: 5, clientId: 'wd', clean: false, properties: { sessionExpiryInterval: 120 } })
  await waitUntil('stale will removed', async () => (await redisCli(redis.port, 'KEYS', 'will:*wd')) === '')
  await back.endAsync()

  const before = await backend()
  assert.equal(await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '1'), 'OK')
  assert.match(await redisCli(redis.port, 'SET', 'probe', '1'), /NOREPLICAS/)

  const watcher = await connect(node, { protocolVersion: 5 })
  await watcher.subscribeAsync('wills/#', { qos: 0 })
  const wills = collect(watcher)

  // Clean sessions with wills, persistent sessions, QoS 1 publishes, retained messages: each of
  // these writes to Redis. Whether a given attempt is refused or served, the node must survive.
  for (let round = 0; round < 5; round++) {
    await tryConnect({ protocolVersion: 4, clientId: `will4-${round}`, will: { topic: `wills/4-${round}`, payload: Buffer.from('x'), qos: 1, retain: false } })
    await tryConnect({ protocolVersion: 5, clientId: `will5-${round}`, will: { topic: `wills/5-${round}`, payload: Buffer.from('x'), qos: 0, retain: false } })
    await tryConnect({ protocolVersion: 4, clientId: `p4-${round}`, clean: false })
    await tryConnect({ protocolVersion: 5, clientId: `p5-${round}`, clean: false, properties: { sessionExpiryInterval: 60 } })
    const pub = mqtt.connect(mqttUrl(node), { reconnectPeriod: 0, connectTimeout: 5_000, protocolVersion: 4 })
    pub.on('error', () => undefined)
    {
      pub.publish('retained/x', 'r', { qos: 1, retain: true })
      pub.publish('plain/x', 'q', { qos: 1 })
      await new Promise((resolve) => setTimeout(resolve, 200))
      pub.end(true)
    }
  }
  // An abrupt loss publishes the will and deletes it from Redis: the delete fails too.
  const abrupt = await attempt({ protocolVersion: 4, clientId: 'abrupt', will: { topic: 'wills/abrupt', payload: Buffer.from('x'), qos: 0, retain: false } })
  abrupt?.stream.destroy()
  await new Promise((resolve) => setTimeout(resolve, 1_000))

  assert.equal(node.process.exitCode, null, 'the node is still running')
  assert.ok(!node.logs.some((l) => /unhandled|uncaught/i.test(l.msg)), 'no unhandled rejection logged')
  const during = await backend()
  assert.ok(during.persistenceErrors > before.persistenceErrors, `failures counted (${during.persistenceErrors})`)
  assert.ok(node.logs.some((l) => l.level === 40 && /Redis refused a persistence operation .*NOREPLICAS/.test(l.msg)), 'the refusal is logged')
  // A clean session without a will needs no write: still served.
  assert.equal(await tryConnect({ protocolVersion: 5 }), true)

  // The cause removed: everything works again, without a restart.
  assert.equal(await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '0'), 'OK')
  const persistent = await connect(node, { protocolVersion: 5, clientId: 'after', clean: false, properties: { sessionExpiryInterval: 60 } })
  await persistent.subscribeAsync('after/#', { qos: 1 })
  const got = collect(persistent)
  const withWill = await connect(node, { protocolVersion: 4, clientId: 'will-after', will: { topic: 'wills/after', payload: Buffer.from('bye'), qos: 1, retain: false } })
  const pub = await connect(node, { protocolVersion: 5 })
  await pub.publishAsync('after/x', 'stored', { qos: 1 })
  await waitUntil('QoS 1 delivered', () => got.some((m) => m.payload === 'stored'))
  withWill.stream.destroy()
  await waitUntil('will published', () => wills.some((m) => m.topic === 'wills/after' && m.payload === 'bye'))
  assert.equal(node.process.exitCode, null)
  await Promise.all([persistent.endAsync(), pub.endAsync(), watcher.endAsync()])
})
