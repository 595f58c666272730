import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { collect, connect, getJson, startNodes, stopAll, tokenOf, waitUntil } from './nodes.js'

/*
 * Redis unreachable: the nodes keep running and keep serving local traffic, report not ready,
 * refuse new persistent sessions with Server unavailable, log the outage, and recover by
 * themselves when Redis is back.
 */

let redis: RedisServer
let nodes: RunningFleetmq[]

before(async () => {
  redis = await startRedis()
  nodes = await startNodes(2, { redis: redis.url })
})

after(async () => {
  await stopAll(nodes)
  await stopRedis(redis)
})

test('Redis down: no crash, /readyz 503, persistent sessions refused (0x88 / 3), local traffic served; back by itself', async () => {
  const [a] = nodes
  const sub = await connect(a, { protocolVersion: 5 })
  const pub = await connect(a, { protocolVersion: 4 })
  await sub.subscribeAsync('local/#', { qos: 0 })
  const got = collect(sub)

  const first = redis
  await first.kill9()
  for (const node of nodes) {
    await waitUntil('not ready', async () => (await getJson(node.mgmtPort, '/readyz')).status === 503)
  }
  // The public probe says only that and why, in general terms; the detail needs credentials.
  const ready = await getJson(a.mgmtPort, '/readyz')
  assert.deepEqual(ready.body, { ready: false, reason: 'the cluster is not ready (see /api/v1/cluster/status)' })
  const status = await getJson(a.mgmtPort, '/api/v1/cluster/status', tokenOf(a))
  assert.equal((status.body.backend as { ready: boolean }).ready, false)
  assert.equal((status.body.backend as { outages: number }).outages, 1)
  assert.ok(a.logs.some((l) => l.level === 50 && /^Redis unreachable at redis:\/\/127\.0\.0\.1:\d+: not ready/.test(l.msg)))

  // [MQTT-3.2.2-6] 5.0: CONNACK 0x88 Server unavailable; 3.1.1: return code 3 (§3.2.2.3).
  await assert.rejects(connect(a, { protocolVersion: 5, clientId: 'p5', clean: false, properties: { sessionExpiryInterval: 60 } }), (err: Error & { code?: number }) => err.code === 0x88)
  await assert.rejects(connect(a, { protocolVersion: 4, clientId: 'p4', clean: false }), (err: Error & { code?: number }) => err.code === 3)

  // This node's own subscribers still get this node's publishes (QoS 0, no Redis needed).
  await pub.publishAsync('local/x', 'still here', { qos: 0 })
  await waitUntil('local delivery', () => got.some((m) => m.payload === 'still here'))
  for (const node of nodes) assert.equal(node.process.exitCode, null)

  // Redis back at the same address: every node recovers without a restart.
  await stopRedis(first)
  redis = await startRedis({ port: first.port })
  for (const node of nodes) {
    await waitUntil('ready again', async () => (await getJson(node.mgmtPort, '/readyz')).status === 200, 20_000)
  }
  const persistent = await connect(a, { protocolVersion: 5, clientId: 'p5', clean: false, properties: { sessionExpiryInterval: 60 } })
  await Promise.all([persistent.endAsync(), sub.endAsync(), pub.endAsync()])
})
