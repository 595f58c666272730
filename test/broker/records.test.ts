import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { fileRecords, redisRecords, type RecordStore } from '../../broker/cluster/records.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'

/*
 * The record sets of the management API (API keys, bans) have two places: a clustered node's
 * Redis and a standalone node's data folder. One contract, run against both.
 */

interface Item {
  readonly name: string
  readonly n: number
}

function contract(name: string, open: () => Promise<RecordStore<Item>>): void {
  describe(name, () => {
    test('add stores once, put replaces, remove says whether there was one; list and get read them back', async () => {
      const store = await open()
      assert.equal(await store.add('a', { name: 'a', n: 1 }), true)
      assert.equal(await store.add('a', { name: 'a', n: 2 }), false, 'a second add of the same id stores nothing')
      assert.deepEqual(await store.get('a'), { name: 'a', n: 1 })
      await store.put('a', { name: 'a', n: 3 })
      await store.put('b', { name: 'b', n: 4 })
      assert.deepEqual(await store.get('a'), { name: 'a', n: 3 })
      assert.deepEqual([...(await store.list()).entries()].sort(), [['a', { name: 'a', n: 3 }], ['b', { name: 'b', n: 4 }]])
      assert.equal(await store.remove('a'), true)
      assert.equal(await store.remove('a'), false)
      assert.equal(await store.get('a'), undefined)
      assert.deepEqual([...(await store.list()).keys()], ['b'])
      await store.close()
    })

    test('concurrent adds of one id: exactly one wins', async () => {
      const store = await open()
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.add('race', { name: 'race', n: i })))
      assert.equal(results.filter(Boolean).length, 1)
      await store.close()
    })

    test('ids with any characters (a client id, an IPv6 CIDR block)', async () => {
      const store = await open()
      for (const id of ['clientid:a/b+#', 'address:fd00::/8', 'username:ünï cødé']) assert.equal(await store.add(id, { name: id, n: 0 }), true)
      assert.equal((await store.list()).size, 3)
      await store.close()
    })
  })
}

let redis: RedisServer
const connections: Redis[] = []
before(async () => { redis = await startRedis() })
after(async () => {
  for (const c of connections) c.disconnect()
  await stopRedis(redis)
})

let cluster = 0
contract('in the cluster\'s Redis', async () => {
  const connection = new Redis(redis.url)
  connections.push(connection)
  return redisRecords<Item>(connection, `records-${++cluster}`, 'items')
})

contract('in a file of the data folder', async () => fileRecords<Item>(join(mkdtempSync(join(tmpdir(), 'fleetmq-records-')), 'items.json')))

test('the file is written 0600 and a file that is not a record file is refused with what to do', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-records-'))
  const store = fileRecords<Item>(join(dir, 'items.json'))
  await store.add('a', { name: 'a', n: 1 })
  assert.equal(statSync(join(dir, 'items.json')).mode & 0o777, 0o600)
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'items.json'), 'utf8')), { version: 1, records: { a: { name: 'a', n: 1 } } })
  writeFileSync(join(dir, 'bad.json'), '[1,2]')
  await assert.rejects(fileRecords<Item>(join(dir, 'bad.json')).list(), /bad\.json is not a FleetMQ record file .*move it aside/)
})
