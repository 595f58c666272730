import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { connect as tlsConnect } from 'node:tls'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ensureNodeCertificate } from '../../broker/cluster/cluster-ca.js'
import { runCli, type RunningFleetmq } from '../helpers/fleetmq.js'
import { redisCliOver, startSentinelGroup, type RedisTls, type SentinelGroup } from '../helpers/redis.js'
import { collect, connect, startNodes, stopAll, waitUntil } from './nodes.js'

/*
 * Redis, its replication and Sentinel speaking TLS only (`port 0`, `tls-port`, `tls-replication
 * yes`, `tls-auth-clients yes`), with certificates of the cluster CA derived from the cluster
 * secret (broker/cluster/cluster-ca.ts), and two FleetMQ nodes on them: messages cross nodes, a
 * plaintext client gets nothing from any port, and a Sentinel failover is followed over TLS.
 */

const run = promisify(execFile)
const SECRET = 'f'.repeat(64)

let dir: string
let tls: RedisTls
let group: SentinelGroup
let nodes: RunningFleetmq[]

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fleetmq-redis-tls-'))
  // Every Redis process and every node uses one certificate here; on hosts each has its own.
  const files = ensureNodeCertificate({ secret: SECRET, dir, name: 'node-1', names: ['127.0.0.1', 'localhost'] })
  tls = { ca: files.ca, cert: files.cert, key: files.key, authClients: 'yes' }
  group = await startSentinelGroup({ replicas: 1, tls })
  const env = {
    FLEETMQ_CLUSTER__REDIS__SENTINELS: JSON.stringify(group.sentinelAddresses),
    FLEETMQ_CLUSTER__REDIS__NAME: group.name,
    FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE: files.ca,
    FLEETMQ_CLUSTER__REDIS__TLS__CERT_FILE: files.cert,
    FLEETMQ_CLUSTER__REDIS__TLS__KEY_FILE: files.key,
  }
  nodes = await startNodes(2, { env })
})

after(async () => {
  await stopAll(nodes)
  await group?.stop()
  rmSync(dir, { recursive: true, force: true })
})

/** What a plaintext `redis-cli PING` gets from `port`: never PONG from a TLS-only port. */
async function plaintextPing(port: number): Promise<string> {
  try {
    const { stdout, stderr } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'PING'], { timeout: 5_000 })
    return `${stdout}${stderr}`.trim()
  } catch (err) {
    return `failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`.trim()
  }
}

/** Completes a TLS handshake with `port`, verifying its certificate against the cluster CA. */
function tlsHandshake(port: number): Promise<{ authorized: boolean; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, () => {
      resolve({ authorized: socket.authorized, protocol: socket.getProtocol() })
      socket.end()
    })
    socket.once('error', reject)
  })
}

async function crossNodeMessage(topic: string): Promise<void> {
  const [a, b] = nodes
  const sub = await connect(b)
  const got = collect(sub)
  await sub.subscribeAsync(topic, { qos: 1 })
  const pub = await connect(a)
  try {
    await pub.publishAsync(topic, 'over tls', { qos: 1 })
    await waitUntil(`the message on ${topic} from node A at node B`, () => got.some((m) => m.topic === topic && m.payload === 'over tls'))
  } finally {
    await Promise.all([pub.endAsync(), sub.endAsync()])
  }
}

test('two nodes on Redis and Sentinel over TLS: messages cross nodes', async () => {
  await crossNodeMessage('tls/cross')
  // The nodes are in the cluster through TLS: a healthy replication link and the nodes' clients.
  const info = await redisCliOver(tls, group.servers[0].port, 'INFO', 'replication')
  assert.match(info, /^slave0:.*state=online/m, info)
  const clients = await redisCliOver(tls, group.servers[0].port, 'CLIENT', 'LIST')
  assert.match(clients, /name=fleetmq-persistence/, 'the nodes hold connections to the primary')
})

test('every Redis and Sentinel port refuses plaintext and completes a verified TLS handshake', async () => {
  for (const port of [...group.servers.map((s) => s.port), ...group.sentinels.map((s) => s.port)]) {
    const answer = await plaintextPing(port)
    assert.doesNotMatch(answer, /PONG/, `plaintext PING to ${port} answered: ${answer}`)
    const handshake = await tlsHandshake(port)
    assert.equal(handshake.authorized, true, `port ${port}: certificate verified against the cluster CA`)
    assert.match(String(handshake.protocol), /^TLSv1\.[23]$/)
  }
})

test('a Sentinel failover over TLS: the nodes follow the new primary', async () => {
  const before = await group.primaryPort()
  await group.servers.find((s) => s.port === before)?.kill9()
  const after = await waitUntil('a new primary elected over TLS', async () => {
    const port = await group.primaryPort()
    return port !== before ? port : undefined
  }, 20_000)
  assert.notEqual(after, before)
  await waitUntil('messages across nodes after the failover', async () => {
    await crossNodeMessage(`tls/failover/${Date.now()}`)
    return true
  }, 30_000)
})

test('a TLS file that cannot be read stops the start naming the key and the fix', async () => {
  const result = await runCli(['start', '--allow-anonymous', '--mqtt', '127.0.0.1:0', '--mgmt', '127.0.0.1:0', '--data-dir', dir], {
    FLEETMQ_CLUSTER__REDIS__URL: `rediss://127.0.0.1:${group.servers[0].port}`,
    FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE: join(dir, 'missing-ca.pem'),
  })
  assert.equal(result.code, 1)
  assert.match(result.stderr, /cluster\.redis\.tls\.caFile .*missing-ca\.pem \(ENOENT\)/)
  assert.match(result.stderr, /FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE/)
  const empty = join(dir, 'empty.yaml')
  writeFileSync(empty, '{}\n')
  const half = await runCli(['config', 'check', empty], { FLEETMQ_CLUSTER__REDIS__URL: 'rediss://127.0.0.1:1', FLEETMQ_CLUSTER__REDIS__TLS__CERT_FILE: tls.cert })
  assert.notEqual(half.code, 0)
  assert.match(`${half.stdout}${half.stderr}`, /certFile and keyFile go together/)
})
