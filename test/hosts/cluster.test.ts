import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { MqttClient } from 'mqtt'
import type { Client as SshClient } from 'ssh2'
import { renderNodeEnv } from '../../infra/node-env.js'
import { buildBundle, type BuiltBundle } from '../../scripts/bundle.js'
import { connectSsh } from '../../scripts/lib/remote-provision.js'
import { bootHost, createNetwork, createTestKey, HOST_USER, REPO_ROOT, type Host, type HostNetwork, type TestKey } from '../helpers/hosts.js'
import { connectProxied } from './proxied-mqtt.js'
import { provisionOver, sudo } from './remote.js'

/*
 * A cluster of real hosts: three provisioned from scratch as `pulumi up` does, a fourth added with
 * scripts/join-node while clients are connected and taken out again, failures that must leave the
 * cluster untouched, and a host lost with the Redis primary on it.
 */

const work = mkdtempSync(join(tmpdir(), 'fleetmq-cluster-test-'))
const CLUSTER = 'fleet'
const SECRETS = { 'cluster-secret': 'cluster-secret-for-the-cluster-test-0123456789', 'admin-password': 'admin-password-42', 'redis-password': 'redis-password-42' }
/** redis-cli over TLS (Redis and Sentinel speak nothing else), with the host's certificate and the Redis password. */
const REDIS_CLI = `REDISCLI_AUTH=${SECRETS['redis-password']} redis-cli --tls --cacert /etc/redis/tls/ca.pem --cert /etc/redis/tls/node.pem --key /etc/redis/tls/node-key.pem`
/** redis-cli against the local Sentinel, which takes the Redis password (requirepass). */
const SENTINEL_CLI = `${REDIS_CLI} -h 127.0.0.1 -p 26379`
const mqttOptions = { username: 'admin', password: SECRETS['admin-password'] }
let bundle: BuiltBundle
let network: HostNetwork
let key: TestKey
const hosts: Host[] = []
const ssh = new Map<string, SshClient>()
const clients: MqttClient[] = []
const secretFiles: Record<string, string> = {}

const log = (line: string) => process.stderr.write(`# ${line}\n`)

before(async () => {
  bundle = await buildBundle({ arch: 'x64', outDir: join(work, 'dist'), log: () => {} })
  network = await createNetwork()
  key = await createTestKey(mkdtempSync(join(work, 'key-')))
  for (let i = 1; i <= 4; i++) hosts.push(await bootHost(network, `n${i}`, { index: i, key, log }))
  for (const host of hosts) {
    ssh.set(host.name, await connectSsh({ host: host.address, username: HOST_USER, privateKey: key.privateKey, hostKey: { fingerprint: host.hostKeyFingerprint } }))
  }
  for (const [name, value] of Object.entries(SECRETS)) {
    secretFiles[name] = join(work, name)
    writeFileSync(secretFiles[name], `${value}\n`, { mode: 0o600 })
  }
}, { timeout: 400_000 })

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})))
  for (const client of ssh.values()) client.end()
  await Promise.all(hosts.map((h) => h.stop()))
  await network?.close()
  rmSync(work, { recursive: true, force: true })
})

const host = (name: string): Host => hosts.find((h) => h.name === name)!
const on = (name: string) => ssh.get(name)!

function nodeEnv(index: number): string {
  const self = hosts[index - 1]
  // The hosts' network is the cluster's (as the private subnets are on AWS); the test side stands in
  // for the load balancer.
  return renderNodeEnv({
    clusterName: CLUSTER, nodeNumber: index, nodeName: self.name, advertiseAddress: self.address, seedAddress: hosts[0].address, redis: { kind: 'colocated' }, wss: false,
    peers: [`${network.prefix}.0/24`], plaintextFrom: [network.testAddress],
  })
}

interface Status { cluster: string; nodes: { id: string; health: string; self: boolean }[] }

async function clusterStatus(from: string): Promise<Status> {
  return JSON.parse(await sudo(on(from), 'fleetmq cluster status --json')) as Status
}

async function eventually(description: string, check: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(1_000)
  }
  assert.fail(`timed out after ${timeoutMs / 1000} s waiting until ${description}`)
}

const healthOf = (status: Status) => Object.fromEntries(status.nodes.map((n) => [n.id, n.health]))

async function connect(name: string, clientId: string, onMessage?: (topic: string, payload: Buffer) => void): Promise<MqttClient> {
  const client = await connectProxied(host(name).address, 1883, { ...mqttOptions, clientId }, onMessage)
  clients.push(client)
  return client
}

/** A subscriber on one host receives what a publisher on another publishes. */
async function crossHost(from: string, to: string, topic: string): Promise<void> {
  let deliver: (text: string) => void = () => {}
  const received = new Promise<string>((resolve) => { deliver = resolve })
  const subscriber = await connect(to, `sub-${to}-${topic.replace(/\W/g, '')}`, (_t, payload) => deliver(payload.toString()))
  await subscriber.subscribeAsync(topic, { qos: 1 })
  const publisher = await connect(from, `pub-${from}-${topic.replace(/\W/g, '')}`)
  await publisher.publishAsync(topic, `from ${from} to ${to}`, { qos: 1 })
  assert.equal(await Promise.race([received, sleep(20_000).then(() => 'nothing within 20 s')]), `from ${from} to ${to}`)
  await Promise.all([subscriber.endAsync(), publisher.endAsync()])
}

/** Runs scripts/join-node as an operator would; exit code and output. */
async function joinNode(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now()
  const child = spawn(join(REPO_ROOT, 'scripts/join-node'), args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: work } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d })
  child.stderr.on('data', (d: Buffer) => { stderr += d })
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, stdout, stderr, ms: Date.now() - started }
}

const joinArgs = (target: Host, extra: string[] = []): string[] => [
  '--host', `${HOST_USER}@${target.address}`, '--seed', hosts[0].address, '--identity', key.file, '--host-key', target.hostKeyFingerprint,
  '--bundle', bundle.file, '--cluster-name', CLUSTER, '--name', target.name,
  '--cluster-secret-file', secretFiles['cluster-secret'], '--redis-password-file', secretFiles['redis-password'], '--admin-password-file', secretFiles['admin-password'],
  '--peers', `${network.prefix}.0/24`, '--plaintext-from', network.testAddress,
  ...extra,
]

test('three fresh hosts provisioned as pulumi up does form one cluster; messages cross hosts', { timeout: 400_000 }, async (t) => {
  const stage = (index: number) => ({ envText: nodeEnv(index), bundleFile: bundle.file, secrets: SECRETS })
  const started = Date.now()
  await provisionOver(on('n1'), ['install', 'configure', 'join'], stage(1))
  t.diagnostic(`seed provisioned in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  await Promise.all([2, 3].map((i) => provisionOver(on(`n${i}`), ['install', 'configure', 'join'], stage(i))))
  t.diagnostic(`three hosts provisioned in ${((Date.now() - started) / 1000).toFixed(1)} s`)

  for (const name of ['n1', 'n2', 'n3']) {
    assert.deepEqual(healthOf(await clusterStatus(name)), { n1: 'up', n2: 'up', n3: 'up' }, `${name} sees the whole cluster`)
  }
  // Redis: one primary (the seed), two replicas, three Sentinels that know each other.
  assert.match(await sudo(on('n2'), `${REDIS_CLI} -h 127.0.0.1 ROLE | head -n 2 | tail -n 1`), new RegExp(hosts[0].address.replace(/\./g, '\\.')))
  // Replication runs over TLS: the primary has both replicas online, and from another host the
  // primary's and a Sentinel's ports answer TLS with the cluster CA's certificate, never plaintext.
  const replication = await sudo(on('n1'), `${REDIS_CLI} -h ${hosts[0].address} INFO replication`)
  assert.match(replication, /^connected_slaves:2\r?$/m, replication)
  assert.equal(replication.match(/^slave\d+:.*state=online/gm)?.length, 2, replication)
  for (const port of [6379, 26379]) {
    assert.doesNotMatch(await sudo(on('n2'), `REDISCLI_AUTH=${SECRETS['redis-password']} timeout 5 redis-cli -h ${hosts[0].address} -p ${port} PING 2>&1 || true`), /PONG|NOAUTH/, `plaintext to n1:${port}`)
    assert.equal(await sudo(on('n2'), `${REDIS_CLI} -h ${hosts[0].address} -p ${port} PING`), 'PONG', `TLS to n1:${port}`)
  }
  assert.match(await sudo(on('n2'), `timeout 5 openssl s_client -connect ${hosts[0].address}:6379 -CAfile /etc/redis/tls/ca.pem -verify_return_error </dev/null 2>&1 | grep -E '^(Verify return code|    Protocol)' || true`), /Verify return code: 0 \(ok\)/)
  // Node to node management over https: the joined nodes reached the seed, and plain HTTP gets nothing.
  assert.doesNotMatch(await sudo(on('n2'), `/opt/fleetmq/current/node/bin/node -e 'require("node:http").get("http://${hosts[0].address}:18083/healthz", (r) => console.log(r.statusCode)).on("error", (e) => console.log(e.code))'`), /^200$/)
  await eventually('every Sentinel knows the two others', async () =>
    (await sudo(on('n1'), `${SENTINEL_CLI} SENTINEL sentinels fleetmq | grep -c "^ip$"`)) === '2')
  await crossHost('n1', 'n3', 'fleet/cross-1')
  await crossHost('n3', 'n2', 'fleet/cross-2')

  // Every phase a second time on every host: nothing restarts.
  const states = async () => Promise.all(['n1', 'n2', 'n3'].map((n) => sudo(on(n), 'systemctl show -p ActiveEnterTimestamp -p MainPID fleetmq.service redis-server.service redis-sentinel.service')))
  const before = await states()
  await Promise.all([1, 2, 3].map((i) => provisionOver(on(`n${i}`), ['install', 'configure', 'join'], stage(i))))
  assert.deepEqual(await states(), before, 'no service restarted on a second run')
})

test('join-node adds a fourth host while clients are connected, again harmlessly, and --leave takes it out', { timeout: 400_000 }, async (t) => {
  const n4 = host('n4')
  let closed = 0
  const counted: string[] = []
  const listener = await connect('n2', 'steady-listener', (_t, payload) => counted.push(payload.toString()))
  await listener.subscribeAsync('fleet/steady', { qos: 1 })
  const talker = await connect('n1', 'steady-talker')
  for (const c of [listener, talker]) c.on('close', () => { closed++ })

  const joined = await joinNode(joinArgs(n4))
  assert.equal(joined.code, 0, joined.stdout + joined.stderr)
  t.diagnostic(`join-node (upload, install, configure, join) took ${(joined.ms / 1000).toFixed(1)} s`)
  for (const line of ['==> connect to', '==> check that the host reaches the seed', '==> upload', '==> install', '==> configure', '==> join', 'is a healthy member of the cluster and serves MQTT on port 1883']) {
    assert.ok(joined.stdout.includes(line), `progress shows "${line}":\n${joined.stdout}`)
  }
  assert.deepEqual(healthOf(await clusterStatus('n1')), { n1: 'up', n2: 'up', n3: 'up', n4: 'up' })
  await talker.publishAsync('fleet/steady', 'while n4 joined', { qos: 1 })
  await crossHost('n4', 'n2', 'fleet/from-n4')

  const services = () => sudo(on('n4'), 'systemctl show -p ActiveEnterTimestamp -p MainPID fleetmq.service redis-server.service redis-sentinel.service')
  const before = await services()
  const again = await joinNode(joinArgs(n4))
  assert.equal(again.code, 0, again.stdout + again.stderr)
  assert.match(again.stdout, /already a member of cluster "fleet"|already the current one|nothing to do/)
  assert.equal(await services(), before, 'running join-node again restarts nothing')

  const left = await joinNode(joinArgs(n4, ['--leave']))
  assert.equal(left.code, 0, left.stdout + left.stderr)
  assert.match(left.stdout, /n4 \(.*\) has left the cluster/)
  await eventually('n4 shows as left', async () => healthOf(await clusterStatus('n1')).n4 !== 'up')
  assert.equal(await sudo(on('n4'), 'systemctl is-active fleetmq.service redis-server.service redis-sentinel.service || true'), 'inactive\ninactive\ninactive')
  await eventually('the remaining Sentinels forget n4', async () =>
    (await sudo(on('n1'), `${SENTINEL_CLI} SENTINEL sentinels fleetmq | grep -c "^ip$" || true`)) === '2')
  const leftAgain = await joinNode(joinArgs(n4, ['--leave']))
  assert.equal(leftAgain.code, 0, `leaving twice is harmless: ${leftAgain.stderr}`)

  await talker.publishAsync('fleet/steady', 'after n4 left', { qos: 1 })
  await eventually('the listener got both messages', async () => counted.length === 2, 20_000)
  assert.deepEqual(counted, ['while n4 joined', 'after n4 left'])
  assert.equal(closed, 0, 'clients on the other nodes stayed connected throughout')
})

test('a wrong host key, an unknown host, a wrong seed and an unreachable host fail cleanly', { timeout: 300_000 }, async () => {
  const n4 = host('n4')
  const statusBefore = healthOf(await clusterStatus('n1'))
  const n4Before = await sudo(on('n4'), 'systemctl is-active fleetmq.service || true; ls /opt/fleetmq')

  const wrongKey = await joinNode(joinArgs(n4, ['--host-key', hosts[0].hostKeyFingerprint]))
  assert.equal(wrongKey.code, 1)
  assert.match(wrongKey.stderr, /host key mismatch for .*: it presents SHA256:\S+, expected SHA256:/)

  const knownHosts = join(work, 'known_hosts')
  writeFileSync(knownHosts, '')
  const unknown = await joinNode(joinArgs(n4).filter((a, i, all) => a !== '--host-key' && all[i - 1] !== '--host-key').concat(['--known-hosts', knownHosts]))
  assert.equal(unknown.code, 1)
  assert.match(unknown.stderr, /is not in .*known_hosts \(its key is SHA256:\S+\); check the key on the host, then pass --host-key SHA256:\S+ or --accept-new-host-key/)

  const wrongSeed = await joinNode(joinArgs(n4).map((a) => (a === hosts[0].address ? `${network.prefix}.99` : a)))
  assert.equal(wrongSeed.code, 1)
  assert.match(wrongSeed.stderr, /step "preflight" failed: the host cannot reach the seed's management API at .*\.99:18083.*nothing was changed/)

  const unreachable = await joinNode(joinArgs(n4, ['--connect-timeout', '5']).map((a) => (a === `${HOST_USER}@${n4.address}` ? `${HOST_USER}@${network.prefix}.250` : a)))
  assert.equal(unreachable.code, 1)
  assert.match(unreachable.stderr, /cannot connect to .*\.250:22/)

  assert.equal(await sudo(on('n4'), 'systemctl is-active fleetmq.service || true; ls /opt/fleetmq'), n4Before, 'the failed runs changed nothing on the host')
  assert.deepEqual(healthOf(await clusterStatus('n1')), statusBefore, 'nor in the cluster')
})

test('stopping the host with the Redis primary: the cluster keeps serving and Sentinel fails over', { timeout: 300_000 }, async (t) => {
  const primaryAddress = await sudo(on('n2'), `${SENTINEL_CLI} SENTINEL get-master-addr-by-name fleetmq | head -n 1`)
  const lost = hosts.find((h) => h.address === primaryAddress)!
  assert.ok(lost && ['n1', 'n2', 'n3'].includes(lost.name), `the primary ${primaryAddress} is on one of the cluster's hosts`)
  const survivors = ['n1', 'n2', 'n3'].filter((n) => n !== lost.name)
  const started = Date.now()
  ssh.get(lost.name)!.end()
  ssh.delete(lost.name)
  await lost.stop()

  await eventually('a Sentinel promotes a replica', async () => {
    const now = await sudo(on(survivors[0]), `${SENTINEL_CLI} SENTINEL get-master-addr-by-name fleetmq | head -n 1`)
    return now !== primaryAddress && hosts.some((h) => h.address === now && survivors.includes(h.name))
  })
  t.diagnostic(`failover completed ${((Date.now() - started) / 1000).toFixed(1)} s after ${lost.name} stopped`)
  const promoted = await sudo(on(survivors[0]), `${SENTINEL_CLI} SENTINEL get-master-addr-by-name fleetmq | head -n 1`)
  assert.equal(await sudo(on(survivors[1]), `${SENTINEL_CLI} SENTINEL get-master-addr-by-name fleetmq | head -n 1`), promoted, 'the Sentinels agree')

  await eventually('messages cross the surviving hosts again', async () => {
    await crossHost(survivors[0], survivors[1], `fleet/after-failover-${Date.now()}`)
    return true
  })
  await eventually(`${lost.name} shows down`, async () => healthOf(await clusterStatus(survivors[0]))[lost.name] === 'down')
  // A survivor whose heartbeats stalled while Redis failed over may be shown down for a moment;
  // the cluster must see it up again by itself.
  await eventually(`${survivors[1]} shows ${survivors[0]} up`, async () => healthOf(await clusterStatus(survivors[1]))[survivors[0]] === 'up')
})
