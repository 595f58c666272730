import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { IDisconnectPacket } from 'mqtt'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { runCli } from '../helpers/fleetmq.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { connect, connectCollecting, getJson, nextEvent, secretFile, startNode, stopAll, tokenOf, waitUntil } from './nodes.js'

/*
 * `fleetmq cluster leave` drains the node: 5.0 clients are redirected (0x9C, or 0x9D with the
 * Server Reference when one is configured), 3.1.1 clients are closed, the node stops, and the
 * persistent sessions it served resume on another node.
 */

let redis: RedisServer
let stay: RunningFleetmq
let secret: string

before(async () => {
  redis = await startRedis()
  secret = secretFile()
  stay = await startNode({ redis: redis.url, secret })
})

after(async () => {
  await stopAll([stay])
  await stopRedis(redis)
})

const session5 = (clientId: string) => ({ protocolVersion: 5 as const, clientId, clean: false, properties: { sessionExpiryInterval: 600 } })

test('leave redirects 5.0 clients with 0x9C, closes 3.1.1 clients, stops the node; sessions resume on another node', async () => {
  const leaving = await startNode({ redis: redis.url, secret })
  const v5 = await connect(leaving, session5('leave-v5'))
  const v311 = await connect(leaving, { protocolVersion: 4, clientId: 'leave-v311', clean: false })
  await v5.subscribeAsync('leave/#', { qos: 1 })
  await v311.subscribeAsync('leave/#', { qos: 1 })
  const v5Disconnect = nextEvent<[IDisconnectPacket]>(v5, 'disconnect')
  const v311Closed = nextEvent(v311, 'close')
  const exited = once(leaving.process, 'exit')

  const result = await runCli(['cluster', 'leave', '--node', `127.0.0.1:${leaving.mgmtPort}`, '--data-dir', leaving.dir, '--json'])
  assert.equal(result.code, 0, result.stdout + result.stderr)
  const out = JSON.parse(result.stdout) as { left: boolean; redirected: number; closed: number; reasonCode: number }
  assert.deepEqual([out.left, out.redirected, out.closed, out.reasonCode], [true, 1, 1, 0x9c])
  const [packet] = await v5Disconnect
  assert.equal(packet.reasonCode, 0x9c, 'Use another server [MQTT-4.11]')
  await v311Closed
  assert.deepEqual(await exited, [0, null], 'the node stops by itself after leaving')
  v5.end(true)
  v311.end(true)

  // Messages published while the clients move are queued in their sessions in Redis.
  const pub = await connect(stay, { protocolVersion: 5 })
  await pub.publishAsync('leave/after', 'queued', { qos: 1 })
  const { client: again5, got: got5 } = await connectCollecting(stay, { ...session5('leave-v5'), resubscribe: false })
  const { client: again311, got: got311 } = await connectCollecting(stay, { protocolVersion: 4, clientId: 'leave-v311', clean: false, resubscribe: false })
  // At least once [MQTT-4.3.2]: a resumed 5.0 session may see the message twice.
  await waitUntil('both resumed sessions get the queued message', () => got5.length >= 1 && got311.length >= 1)
  assert.ok(got5.every((m) => m.payload === 'queued'))
  assert.ok(got311.every((m) => m.payload === 'queued'))
  const status = await getJson(stay.mgmtPort, '/api/v1/cluster/status', tokenOf(stay))
  assert.equal((status.body.nodes as { mgmt: string; health: string }[]).find((n) => n.mgmt === `127.0.0.1:${leaving.mgmtPort}`)?.health, 'left')
  await Promise.all([pub.endAsync(), again5.endAsync(), again311.endAsync()])
})

test('with serverReference configured, 5.0 clients get 0x9D Server moved and the reference', async () => {
  const leaving = await startNode({ redis: redis.url, secret, env: { FLEETMQ_SERVER_REFERENCE: 'mqtt.example.com:8883' } })
  const v5 = await connect(leaving, { protocolVersion: 5 })
  const disconnected = nextEvent<[IDisconnectPacket]>(v5, 'disconnect')
  const exited = once(leaving.process, 'exit')
  const result = await runCli(['cluster', 'leave', '--node', `127.0.0.1:${leaving.mgmtPort}`, '--data-dir', leaving.dir])
  assert.equal(result.code, 0, result.stderr)
  assert.match(result.stdout, /left cluster "fleetmq": 1 MQTT 5.0 clients redirected \(reason 0x9d\)/)
  const [packet] = await disconnected
  assert.equal(packet.reasonCode, 0x9d)
  assert.equal(packet.properties?.serverReference, 'mqtt.example.com:8883')
  await exited
  v5.end(true)
})

test('leave on a standalone node is a clear error', async () => {
  const standalone = await startNode()
  try {
    const result = await runCli(['cluster', 'leave', '--node', `127.0.0.1:${standalone.mgmtPort}`, '--data-dir', standalone.dir])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /this node is not in a cluster; nothing to leave/)
  } finally {
    await standalone.stop()
  }
})
