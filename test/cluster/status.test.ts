import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { runCli } from '../helpers/fleetmq.js'
import { signRequest, unseal } from '../../broker/cluster/signed-request.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { connect, getJson, secretFile, startNodes, stopAll, waitUntil } from './nodes.js'
import { readFileSync } from 'node:fs'

/* Membership: `fleetmq cluster status` on any node shows every node; a dead one is down within 10 s. */

interface StatusNode { id: string; health: string; connections: number; mgmt: string; mqtt: string[]; version: string; self: boolean }

let redis: RedisServer
let nodes: RunningFleetmq[]
let secret: string

before(async () => {
  redis = await startRedis()
  secret = secretFile()
  nodes = await startNodes(3, { redis: redis.url, secret })
})

after(async () => {
  await stopAll(nodes)
  await stopRedis(redis)
})

const status = async (node: RunningFleetmq): Promise<{ cluster: string; nodes: StatusNode[] }> => {
  const result = await runCli(['cluster', 'status', '--json', '--node', `127.0.0.1:${node.mgmtPort}`, '--data-dir', node.dir])
  assert.equal(result.code, 0, result.stderr)
  return JSON.parse(result.stdout) as { cluster: string; nodes: StatusNode[] }
}

test('cluster status --json on any node lists every node as up, with its addresses, version and connections', async () => {
  const clients = await Promise.all([connect(nodes[1]), connect(nodes[1])])
  try {
    for (const asked of nodes) {
      const body = await waitUntil('three nodes up', async () => {
        const s = await status(asked)
        return s.nodes.filter((n) => n.health === 'up').length === 3 ? s : undefined
      })
      assert.equal(body.cluster, 'fleetmq')
      assert.deepEqual(body.nodes.map((n) => n.mgmt).sort(), nodes.map((n) => `127.0.0.1:${n.mgmtPort}`).sort())
      assert.ok(body.nodes.find((n) => n.self)?.mgmt === `127.0.0.1:${asked.mgmtPort}`, 'the answering node is marked self')
      for (const n of body.nodes) assert.match(n.version, /^\d+\.\d+\.\d+/)
    }
    // Connections travel with the heartbeat (every 2 s).
    await waitUntil('node 2 reports its 2 connections', async () => {
      const s = await status(nodes[0])
      return s.nodes.find((n) => n.mgmt === `127.0.0.1:${nodes[1].mgmtPort}`)?.connections === 2
    })
    const table = await runCli(['cluster', 'status', '--node', `127.0.0.1:${nodes[0].mgmtPort}`, '--data-dir', nodes[0].dir])
    assert.equal(table.code, 0)
    assert.match(table.stdout, /cluster "fleetmq": 3\/3 nodes up/)
    assert.match(table.stdout, /NODE\s+HEALTH\s+CONNS\s+MSG IN\/S\s+MSG OUT\/S\s+VERSION\s+UPTIME/)
  } finally {
    await Promise.all(clients.map((c) => c.endAsync()))
  }
})

test('the descriptor is served only for a request signed with the cluster secret, sealed, once; the cluster API is rate-limited', async () => {
  const path = '/api/v1/cluster/descriptor'
  const secretText = readFileSync(secret, 'utf8').trim()
  assert.equal((await getJson(nodes[0].mgmtPort, path)).status, 401)
  assert.equal((await getJson(nodes[0].mgmtPort, path, { authorization: `Bearer ${secretText}` })).status, 401, 'the secret itself is never accepted: it would be replayable')
  assert.equal((await getJson(nodes[0].mgmtPort, path, { authorization: signRequest('x'.repeat(64), 'GET', path).authorization })).status, 401, 'another secret')
  const stale = await getJson(nodes[0].mgmtPort, path, { authorization: signRequest(secretText, 'GET', path, '', Date.now() - 120_000).authorization })
  assert.equal(stale.status, 401)
  assert.match(String(stale.body.error), /from this node's clock \(at most 60 s\): run NTP/)
  const signed = signRequest(secretText, 'GET', path)
  const good = await getJson(nodes[0].mgmtPort, path, { authorization: signed.authorization })
  assert.equal(good.status, 200)
  assert.equal(JSON.stringify(good.body).includes(redis.url), false, 'the Redis address and credentials are not readable on the wire')
  assert.deepEqual(unseal(secretText, signed.nonce, String(good.body.sealed)), { name: 'fleetmq', redis: { url: redis.url } })
  const replay = await getJson(nodes[0].mgmtPort, path, { authorization: signed.authorization })
  assert.equal(replay.status, 401)
  assert.match(String(replay.body.error), /replayed request/)
  // Default burst 20: a flood from one address gets 429 before the bucket refills.
  const codes = await Promise.all(Array.from({ length: 40 }, () => getJson(nodes[0].mgmtPort, path).then((r) => r.status)))
  assert.ok(codes.includes(429), `some of ${codes.join(',')} are 429`)
})

test('a node killed with SIGKILL is reported down within 10 s', async () => {
  const victim = nodes[2]
  const victimMgmt = `127.0.0.1:${victim.mgmtPort}`
  const killedAt = Date.now()
  await victim.stop('SIGKILL')
  const seenDownAfter = await waitUntil('the killed node marked down', async () => {
    const s = await status(nodes[0])
    return s.nodes.find((n) => n.mgmt === victimMgmt)?.health === 'down' ? Date.now() - killedAt : undefined
  }, 20_000)
  // Down after 10 s without a heartbeat; the last one was at most 2 s before the kill.
  assert.ok(seenDownAfter <= 10_000 + 1_500, `marked down ${seenDownAfter} ms after the kill`)
  const s = await status(nodes[1])
  assert.equal(s.nodes.filter((n) => n.health === 'up').length, 2)
})
