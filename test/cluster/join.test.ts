import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { runCli } from '../helpers/fleetmq.js'
import { freePort, startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { collect, connect, getJson, secretFile, startNode, stopAll, tokenOf, waitUntil } from './nodes.js'

/*
 * `fleetmq cluster join SEED --node LOCAL --cluster-secret-file F`: a running standalone node
 * joins the cluster of the seed, the operator way; mistakes are clear errors that change nothing.
 */

let redis: RedisServer
let otherRedis: RedisServer
let seed: RunningFleetmq
let other: RunningFleetmq
let local: RunningFleetmq
let secret: string
let otherSecretFile: string
let localMgmt: string
let localMqtt: number

before(async () => {
  ;[redis, otherRedis] = await Promise.all([startRedis(), startRedis()])
  secret = secretFile()
  seed = await startNode({ redis: redis.url, secret })
  otherSecretFile = secretFile()
  other = await startNode({ redis: otherRedis.url, secret: otherSecretFile, env: { FLEETMQ_CLUSTER__NAME: 'other' } })
  // Fixed ports: the joining node restarts in place and binds the same addresses again.
  localMqtt = await freePort()
  const mgmtPort = await freePort()
  localMgmt = `127.0.0.1:${mgmtPort}`
  local = await startNode({ args: ['--mqtt', `127.0.0.1:${localMqtt}`, '--mgmt', localMgmt] })
})

after(async () => {
  await stopAll([seed, other, local])
  await Promise.all([stopRedis(redis), stopRedis(otherRedis)])
})

const joinCli = (seedNode: RunningFleetmq | string, secretPath: string) =>
  runCli(['cluster', 'join', typeof seedNode === 'string' ? seedNode : `127.0.0.1:${seedNode.mgmtPort}`, '--node', localMgmt, '--data-dir', local.dir, '--cluster-secret-file', secretPath, '--json'])

const storedFile = (): string => join(local.dir, 'cluster.json')
const localStatus = async () => (await getJson(Number(localMgmt.split(':')[1]), '/api/v1/cluster/status', tokenOf(local))).body

test('a wrong secret is refused by the seed and changes nothing', async () => {
  const wrong = secretFile()
  const result = await joinCli(seed, wrong)
  assert.equal(result.code, 1)
  assert.match(result.stdout, /refused the cluster secret; use the secret file of that cluster \(nothing was changed\)/)
  assert.equal(existsSync(storedFile()), false)
  assert.equal((await localStatus()).cluster, null)
})

test('a secret file that is too short is named with the fix', async () => {
  const short = join(local.dir, 'short.secret')
  writeFileSync(short, 'tooshort\n')
  const result = await runCli(['cluster', 'join', `127.0.0.1:${seed.mgmtPort}`, '--node', localMgmt, '--cluster-secret-file', short])
  assert.equal(result.code, 1)
  assert.match(result.stderr, /is 8 bytes; it must hold at least 32 \(openssl rand -hex 32/)
})

test('an unreachable seed is a clear error and changes nothing', async () => {
  const result = await joinCli(`127.0.0.1:${await freePort()}`, secret)
  assert.equal(result.code, 1)
  assert.match(result.stdout, /cannot reach the seed's management API at http:\/\/127\.0\.0\.1:\d+\/api\/v1\/cluster\/descriptor \(ECONNREFUSED\)/)
  assert.equal(existsSync(storedFile()), false)
})

test('join with the right secret brings the node into the cluster; it then serves cross-node pub/sub', async () => {
  const result = await joinCli(seed, secret)
  assert.equal(result.code, 0, result.stdout + result.stderr)
  const out = JSON.parse(result.stdout) as { joined: boolean; changed: boolean; cluster: string; nodes: number }
  assert.deepEqual([out.joined, out.changed, out.cluster, out.nodes], [true, true, 'fleetmq', 2])
  assert.equal(statSync(storedFile()).mode & 0o777, 0o600)
  assert.equal(statSync(join(local.dir, 'cluster.secret')).mode & 0o777, 0o600)
  // The seed sees the new member.
  await waitUntil('the seed lists the joined node', async () => {
    const s = await getJson(seed.mgmtPort, '/api/v1/cluster/status', tokenOf(seed))
    return (s.body.nodes as { mgmt: string; health: string }[]).some((n) => n.mgmt === localMgmt && n.health === 'up')
  })
  const sub = await connect(`mqtt://127.0.0.1:${localMqtt}`, { protocolVersion: 5 })
  const got = collect(sub)
  await sub.subscribeAsync('joined/#', { qos: 1 })
  const pub = await connect(seed, { protocolVersion: 4 })
  await pub.publishAsync('joined/hello', 'from the seed', { qos: 1 })
  await waitUntil('the message across nodes', () => got.length === 1)
  assert.equal(got[0].payload, 'from the seed')
  await Promise.all([sub.endAsync(), pub.endAsync()])
})

test('joining again is harmless', async () => {
  const before = readFileSync(storedFile(), 'utf8')
  const result = await joinCli(seed, secret)
  assert.equal(result.code, 0, result.stdout + result.stderr)
  assert.equal((JSON.parse(result.stdout) as { changed: boolean }).changed, false)
  assert.equal(readFileSync(storedFile(), 'utf8'), before)
})

test('a node already in another cluster is refused, and nothing changes', async () => {
  const before = readFileSync(storedFile(), 'utf8')
  const result = await joinCli(other, otherSecretFile)
  assert.equal(result.code, 1)
  assert.match(result.stdout, /already in cluster \\"fleetmq\\", not \\"other\\"; run fleetmq cluster leave on it first \(nothing was changed\)/)
  assert.equal(readFileSync(storedFile(), 'utf8'), before)
  assert.equal((await localStatus()).cluster, 'fleetmq')
})

test('the node that restarted into the cluster still stops cleanly on SIGTERM', async () => {
  assert.equal(await local.stop(), 0)
  assert.ok(local.logs.some((l) => /^stopped$/.test(l.msg)))
})
