import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ensureNodeCertificate } from '../../broker/cluster/cluster-ca.js'
import { runCli, type RunningFleetmq } from '../helpers/fleetmq.js'
import { freePort, startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { collect, connect, startNode, stopAll, waitUntil } from './nodes.js'

/*
 * Node-to-node management over TLS (`mgmt.tls`): each node has its own key and a certificate of
 * the cluster CA derived from the cluster secret; a standalone node joins its seed over https,
 * verifying the seed against that CA, on a Redis that speaks TLS only; the CLI on a node's host
 * reaches its node over https too; plain HTTP gets no answer, and a node of another CA is refused.
 */

let dir: string
let redis: RedisServer
let seed: RunningFleetmq
let local: RunningFleetmq
let secretPath: string
let localMgmt: string
let localEnv: NodeJS.ProcessEnv
let seedCa: string

/** A node's key and certificate (its own folder), and the env that turns on `mgmt.tls`. */
function tlsEnv(secret: string, name: string): NodeJS.ProcessEnv {
  const files = ensureNodeCertificate({ secret, dir: join(dir, name), name, names: ['127.0.0.1', 'localhost'] })
  return { FLEETMQ_MGMT__TLS__CERT: files.cert, FLEETMQ_MGMT__TLS__KEY: files.key, FLEETMQ_MGMT__TLS__CA: files.ca }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fleetmq-mgmt-tls-'))
  const secret = 'c'.repeat(64)
  secretPath = join(dir, 'cluster.secret')
  writeFileSync(secretPath, `${secret}\n`, { mode: 0o600 })
  const redisFiles = ensureNodeCertificate({ secret, dir: join(dir, 'redis'), name: 'redis', names: ['127.0.0.1'] })
  redis = await startRedis({ tls: { ca: redisFiles.ca, cert: redisFiles.cert, key: redisFiles.key } })
  const seedEnv = tlsEnv(secret, 'seed')
  seedCa = seedEnv.FLEETMQ_MGMT__TLS__CA as string
  seed = await startNode({ redis: redis.url, secret: secretPath, env: { ...seedEnv, FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE: redisFiles.ca } })
  // Fixed ports: the joining node restarts in place and binds the same addresses again.
  localMgmt = `127.0.0.1:${await freePort()}`
  localEnv = tlsEnv(secret, 'local')
  local = await startNode({ args: ['--mqtt', `127.0.0.1:${await freePort()}`, '--mgmt', localMgmt], env: localEnv })
})

after(async () => {
  await stopAll([seed, local])
  await stopRedis(redis)
  rmSync(dir, { recursive: true, force: true })
})

/** Status code of a plain-HTTP GET, or the error that ended it. */
function plainHttpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, timeout: 5_000 }, (res) => { res.resume(); resolve(`HTTP ${res.statusCode}`) })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`))
    req.end()
  })
}

test('a node joins its seed over https, verified against the cluster CA, onto Redis over TLS', async () => {
  const joined = await runCli(['cluster', 'join', `127.0.0.1:${seed.mgmtPort}`, '--node', localMgmt, '--data-dir', local.dir, '--cluster-secret-file', secretPath, '--json'], localEnv)
  assert.equal(joined.code, 0, joined.stdout + joined.stderr)
  assert.equal(JSON.parse(joined.stdout).changed, true)
  // The stored descriptor carries the Redis CA (public), never a private key.
  const stored = JSON.parse(readFileSync(join(local.dir, 'cluster.json'), 'utf8')) as { cluster: { redis: { url: string; tls?: { caFile?: string } } } }
  assert.match(stored.cluster.redis.url, /^rediss:\/\//)
  assert.ok(stored.cluster.redis.tls?.caFile)
  assert.doesNotMatch(readFileSync(stored.cluster.redis.tls.caFile, 'utf8'), /PRIVATE KEY/)

  const sub = await connect(`mqtt://${localMgmt.split(':')[0]}:${local.ports.mqtt}`)
  const got = collect(sub)
  await sub.subscribeAsync('mgmt-tls/t', { qos: 1 })
  const pub = await connect(seed)
  await pub.publishAsync('mgmt-tls/t', 'across', { qos: 1 })
  await waitUntil('the message from the seed at the joined node', () => got.some((m) => m.payload === 'across'))
  await Promise.all([pub.endAsync(), sub.endAsync()])

  // `fleetmq cluster status` on the node's host: https to its own API, from its config's mgmt.tls.
  const status = await runCli(['cluster', 'status', '--node', localMgmt, '--data-dir', local.dir, '--json'], localEnv)
  assert.equal(status.code, 0, status.stdout + status.stderr)
  assert.equal((JSON.parse(status.stdout) as { nodes: unknown[] }).nodes.length, 2)
  // … and without the node's settings (root on a provisioned host runs it bare): the node left
  // its CA beside its management token.
  const bare = await runCli(['cluster', 'status', '--node', localMgmt, '--data-dir', local.dir, '--json'])
  assert.equal(bare.code, 0, bare.stdout + bare.stderr)
  // The commands that mirror the API do the same.
  const clients = await runCli(['clients', 'list', '--node', localMgmt, '--data-dir', local.dir, '--json'])
  assert.equal(clients.code, 0, clients.stdout + clients.stderr)
})

test('the management API answers no plain HTTP, and a certificate of another CA is refused', async () => {
  assert.doesNotMatch(await plainHttpGet(seed.mgmtPort as number, '/healthz'), /^HTTP 2/)
  const foreign = ensureNodeCertificate({ secret: 'd'.repeat(64), dir: join(dir, 'foreign'), name: 'foreign', names: ['127.0.0.1'] })
  const refused = await runCli(['cluster', 'status', '--node', `127.0.0.1:${seed.mgmtPort}`, '--cluster-secret-file', secretPath, '--ca-file', foreign.ca])
  assert.equal(refused.code, 1)
  assert.match(refused.stdout + refused.stderr, /certificate is not one of this cluster's CA/)
  const verified = await runCli(['cluster', 'status', '--node', `127.0.0.1:${seed.mgmtPort}`, '--cluster-secret-file', secretPath, '--ca-file', seedCa, '--json'])
  assert.equal(verified.code, 0, verified.stdout + verified.stderr)
})
