import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { replicaAcks } from '../../broker/cluster/replica-acks.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'

/*
 * The WAIT barrier behind a PUBACK (broker/cluster/replica-acks.ts) against a real primary and
 * replica: writes resolve once the replica has them, are refused while it is stalled, and resolve
 * at once (counted) when the primary has no replica to wait for.
 */

let primary: RedisServer
let replica: RedisServer
let redis: Redis

before(async () => {
  primary = await startRedis()
  replica = await startRedis({ replicaOf: primary.port })
  redis = new Redis(primary.port, '127.0.0.1')
  for (let i = 0; i < 100 && !/^slave0:.*state=online/m.test(await redis.info('replication')); i++) await new Promise((r) => setTimeout(r, 100))
})

after(async () => {
  redis.disconnect()
  await stopRedis(replica)
  await stopRedis(primary)
})

test('writes of one event-loop turn share one WAIT and resolve once the replica has them', async () => {
  const acks = replicaAcks(redis, { replicas: 1, timeoutMs: 2_000, connectedReplicas: () => 1 })
  await Promise.all(Array.from({ length: 50 }, async (_, i) => {
    await redis.set(`acks:${i}`, String(i))
    await acks.replicated()
  }))
  const onReplica = new Redis(replica.port, '127.0.0.1')
  try {
    assert.equal(await onReplica.get('acks:49'), '49', 'the replica holds the last write once it resolved')
  } finally {
    onReplica.disconnect()
  }
  const { waits, writes, failures } = acks.status()
  assert.equal(writes, 50)
  assert.equal(failures, 0)
  assert.ok(waits < 50, `${waits} WAITs for 50 writes`)
})

test('a write the replica does not acknowledge in time is refused, naming why', async (t) => {
  const acks = replicaAcks(redis, { replicas: 1, timeoutMs: 300, connectedReplicas: () => 1 })
  process.kill(replica.pid, 'SIGSTOP')
  t.after(() => process.kill(replica.pid, 'SIGCONT'))
  await redis.set('acks:stalled', '1')
  await assert.rejects(acks.replicated(), /0 of 1 Redis replicas acknowledged the write within 300 ms/)
  assert.equal(acks.status().failures, 1)
})

test('with no replica connected a write resolves at once and is counted unreplicated', async () => {
  const acks = replicaAcks(redis, { replicas: 1, timeoutMs: 5_000, connectedReplicas: () => 0 })
  const started = Date.now()
  await acks.replicated()
  assert.ok(Date.now() - started < 1_000)
  assert.deepEqual(acks.status(), { waits: 0, writes: 1, failures: 0, unreplicated: 1 })
})
