import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { runCli, startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { runProgram } from '../helpers/program.js'
import { pubackCode } from '../helpers/mqtt-client.js'
import { freePort, redisCli, startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'
import { hashPassword } from '../../broker/auth/password.js'
import { connect, nextEvent, secretFile, stopAll, waitUntil } from './nodes.js'

/*
 * Device users are the cluster's: a user added, changed or removed through any node applies on
 * every node within 2 s, without a restart or SIGHUP; a node that joins brings its users.json into
 * the cluster's store and reports the users the cluster has with another password.
 */

let redis: RedisServer
let secret: string
let a: RunningFleetmq
let b: RunningFleetmq
let c: RunningFleetmq
const nodes = (): RunningFleetmq[] => [a, b, c]

const ALICE_CLUSTER = 'alice-cluster-password'
const ALICE_LOCAL = 'alice-other-password'

/** A standalone node on fixed ports (it restarts in place when it joins), with its own users. */
async function standalone(users: { username: string; password: string }[]): Promise<RunningFleetmq> {
  const mqtt = await freePort()
  const mgmt = await freePort()
  return startFleetmq({ users, args: ['--mqtt', `127.0.0.1:${mqtt}`, '--mgmt', `127.0.0.1:${mgmt}`, '--log-level', 'debug'] })
}

before(async () => {
  redis = await startRedis()
  secret = secretFile()
  // The first node's users.json becomes the cluster's store at its first start.
  a = await startFleetmq({ users: [{ username: 'alice', password: ALICE_CLUSTER }], args: ['--redis', redis.url, '--cluster-secret-file', secret, '--log-level', 'debug'] })
  ;[b, c] = await Promise.all([
    standalone([{ username: 'alice', password: ALICE_LOCAL }, { username: 'carol', password: 'carol-password-1' }]),
    standalone([]),
  ])
})

after(async () => {
  await stopAll([a, b, c])
  await stopRedis(redis)
})

const login = (node: RunningFleetmq, username: string, password: string, protocolVersion: 4 | 5 = 5): Promise<MqttClient> =>
  connect(node, { protocolVersion, username, password, connectTimeout: 5_000 })

/** The SUBACK code of a one-filter subscription (MQTT.js rejects a 5.0 refusal with its reason string). */
async function subackCode(client: MqttClient, topic: string): Promise<number> {
  try {
    return Number((await client.subscribeAsync(topic, { qos: 1 }))[0].qos)
  } catch (err) {
    if (/Not authorized/.test((err as Error).message)) return 0x87
    throw err
  }
}

/** The CONNACK code of a refused login, or 0 when it was accepted. */
async function loginCode(node: RunningFleetmq, username: string, password: string): Promise<number> {
  try {
    const client = await login(node, username, password)
    await client.endAsync()
    return 0
  } catch (err) {
    return (err as { code?: number }).code ?? -1
  }
}

test('join merges the node\'s users.json into the cluster and reports a user the cluster has with another password', async () => {
  const joined = await runCli(['cluster', 'join', `127.0.0.1:${a.mgmtPort}`, '--node', `127.0.0.1:${b.mgmtPort}`, '--data-dir', b.dir, '--cluster-secret-file', secret])
  assert.equal(joined.code, 0, joined.stdout + joined.stderr)
  assert.match(joined.stdout, /users of .*users\.json: 1 added to the cluster, 0 already there, 1 in conflict; the file is now .*users\.json\.merged/)
  assert.match(joined.stdout, /conflict: user "alice" has another password in the cluster; the cluster's is kept/)
  const joinedC = await runCli(['cluster', 'join', `127.0.0.1:${a.mgmtPort}`, '--node', `127.0.0.1:${c.mgmtPort}`, '--data-dir', c.dir, '--cluster-secret-file', secret, '--json'])
  assert.equal(joinedC.code, 0, joinedC.stdout + joinedC.stderr)
  assert.equal(existsSync(join(b.dir, 'users.json')), false)

  // The conflict left the cluster's alice as she was: her cluster password works through every node.
  for (const node of nodes()) assert.equal(await loginCode(node, 'alice', ALICE_CLUSTER), 0)
  assert.equal(await loginCode(c, 'alice', ALICE_LOCAL), 0x86)
  // carol came with node b and now connects through a and c too.
  assert.equal(await loginCode(a, 'carol', 'carol-password-1'), 0)
  assert.equal(await loginCode(c, 'carol', 'carol-password-1'), 0)
})

test('a user added through one node connects through the others within 2 s (mosquitto_pub and MQTT.js)', async () => {
  // --data-dir of a node that joined: its dataDir holds the cluster descriptor, so the cluster's store changes.
  const added = await runCli(['user', 'add', 'dave', '--password-stdin', '--data-dir', b.dir], {}, 'dave-password-1\n')
  assert.equal(added.code, 0, added.stderr)
  assert.match(added.stdout, /added user dave to cluster "fleetmq" \(Redis at redis:\/\/127\.0\.0\.1:\d+\); running nodes apply it within seconds/)
  const addedAt = Date.now()
  const pub = await runProgram('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(c.ports.mqtt), '-V', 'mqttv311', '-u', 'dave', '-P', 'dave-password-1', '-t', 'users/dave/x', '-m', 'hi', '-q', '1'])
  assert.equal(pub.code, 0, pub.stderr)
  assert.equal(await loginCode(a, 'dave', 'dave-password-1'), 0)
  assert.ok(Date.now() - addedAt < 2_000, `took ${Date.now() - addedAt} ms`)

  // The node's environment file (as systemd passes it to a provisioned node) locates the cluster too.
  const envFile = join(a.dir, 'fleetmq.env')
  writeFileSync(envFile, `# Rendered by FleetMQ from its config schema\nFLEETMQ_CLUSTER__REDIS__URL='${redis.url}'\n`)
  const list = await runCli(['user', 'list', '--json', '--env-file', envFile, '--data-dir', a.dir])
  assert.deepEqual((JSON.parse(list.stdout) as { users: { username: string }[] }).users.map((u) => u.username).sort(), ['alice', 'carol', 'dave'])
})

test('removing a user disconnects its sessions on every node; a new password disconnects them too', async () => {
  await runCli(['user', 'add', 'erin', '--password-stdin', '--data-dir', c.dir], {}, 'erin-password-1\n')
  // A 5.0 session on each node, and a 3.1.1 one on node a.
  const sessions = await Promise.all(nodes().map((node) => login(node, 'erin', 'erin-password-1', 5)))
  const old = await login(a, 'erin', 'erin-password-1', 4)
  const reasons = sessions.map((s) => nextEvent<[{ reasonCode?: number }]>(s, 'disconnect'))
  const closed = [...sessions, old].map((s) => nextEvent(s, 'close'))
  // Node a was started with --redis (no descriptor in its dataDir): the command takes the same flag.
  const passwd = await runCli(['user', 'passwd', 'erin', '--password-stdin', '--redis', redis.url], {}, 'erin-password-2\n')
  assert.equal(passwd.code, 0, passwd.stderr)
  // From the command's end (the change is stored): the command itself spends seconds starting and hashing.
  const changedAt = Date.now()
  await Promise.all(closed)
  assert.ok(Date.now() - changedAt < 2_000, `sessions closed after ${Date.now() - changedAt} ms`)
  // [MQTT-3.14.2-1] 5.0 clients are told why: 0x98 Administrative action.
  for (const [packet] of await Promise.all(reasons)) assert.equal(packet.reasonCode, 0x98)
  assert.equal(await loginCode(b, 'erin', 'erin-password-1'), 0x86)

  const again = await Promise.all(nodes().map((node) => login(node, 'erin', 'erin-password-2', 4)))
  const gone = again.map((s) => nextEvent(s, 'close'))
  const removed = await runCli(['user', 'remove', 'erin', '--data-dir', b.dir])
  assert.equal(removed.code, 0, removed.stderr)
  await Promise.all(gone)
  for (const node of nodes()) assert.equal(await loginCode(node, 'erin', 'erin-password-2'), 0x86)
  // Other users' sessions stay.
  const dave = await login(c, 'dave', 'dave-password-1')
  await runCli(['user', 'remove', 'carol', '--redis', redis.url])
  await waitUntil('carol refused', async () => (await loginCode(c, 'carol', 'carol-password-1')) === 0x86)
  assert.ok(dave.connected)
  await dave.endAsync()
})

test('import: 100,000 pre-hashed users in under a minute, then they connect through any node', async () => {
  // Distinct users; hashes made beforehand as a provisioning system would (a few, for the test's time).
  const hashes = await Promise.all(Array.from({ length: 4 }, (_, i) => hashPassword(`device-secret-${i}-xxxxxxxxxxxx`)))
  const users = Array.from({ length: 100_000 }, (_, i) => ({ username: `dev-${i}`, hash: hashes[i % 4] }))
  users.push({ username: 'alice', hash: hashes[0] })
  const file = join(a.dir, 'fleet.json')
  writeFileSync(file, JSON.stringify(users))
  const started = Date.now()
  const imported = await runCli(['user', 'import', file, '--data-dir', b.dir, '--json'])
  const seconds = (Date.now() - started) / 1000
  assert.equal(imported.code, 0, imported.stdout + imported.stderr)
  const report = JSON.parse(imported.stdout) as { added: number; unchanged: number; conflicts: string[] }
  assert.deepEqual([report.added, report.unchanged, report.conflicts], [100_000, 0, ['alice']])
  assert.ok(seconds < 60, `import took ${seconds} s`)
  process.stderr.write(`# import of 100,000 pre-hashed users: ${seconds.toFixed(1)} s\n`)
  assert.equal(await loginCode(c, 'dev-99999', 'device-secret-3-xxxxxxxxxxxx'), 0)
  assert.equal(await loginCode(a, 'dev-5', 'device-secret-1-xxxxxxxxxxxx'), 0)
  // A second import of the same file changes nothing.
  const again = JSON.parse((await runCli(['user', 'import', file, '--data-dir', c.dir, '--json'])).stdout) as { added: number; unchanged: number }
  assert.deepEqual([again.added, again.unchanged], [0, 100_000])
})

test('a change whose message was lost still applies within 2 s (the change counter is polled)', async () => {
  await runCli(['user', 'add', 'frank', '--password-stdin', '--redis', redis.url], {}, 'frank-password-1\n')
  const session = await login(b, 'frank', 'frank-password-1')
  const closed = nextEvent(session, 'close')
  // What a change does, minus its pub/sub message (as if the node's subscriber was reconnecting).
  await redisCli(redis.port, 'HDEL', 'fleetmq:fleetmq:users', 'frank')
  await redisCli(redis.port, 'INCR', 'fleetmq:fleetmq:auth:version')
  const changedAt = Date.now()
  await closed
  assert.ok(Date.now() - changedAt < 2_000, `closed after ${Date.now() - changedAt} ms`)
  await b.waitForLog((l) => /the change counter moved to \d+ without a message/.test(l.msg))
})

test('the ACL is the cluster\'s: fleetmq acl set through one node applies on every node within 2 s', async () => {
  const shown = JSON.parse((await runCli(['acl', 'show', '--json', '--data-dir', b.dir])).stdout) as { acl: { default: string; rules: unknown[] } }
  // The first node stored its own ACL as the cluster's: the default, deny with no rules.
  assert.deepEqual(shown.acl, { default: 'deny', rules: [] })
  const file = join(a.dir, 'acl.yaml')
  writeFileSync(file, 'default: deny\nrules:\n  - action: allow\n    topics: ["fleet/#"]\n')
  const dave = await login(c, 'dave', 'dave-password-1')
  assert.equal(await subackCode(dave, 'fleet/x'), 0x87)
  assert.equal(await pubackCode(dave, 'fleet/x', 'before'), 0x87)
  const set = await runCli(['acl', 'set', file, '--data-dir', b.dir])
  assert.equal(set.code, 0, set.stderr)
  assert.match(set.stdout, /stored the ACL of cluster "fleetmq" \(1 rules, default deny\); every node applies it within seconds/)
  const setAt = Date.now()
  // Checked with a publish: granting a subscription also announces its route to every node, which is not what is timed here.
  await waitUntil('the publish allowed on node c', async () => (await pubackCode(dave, 'fleet/y', 'after')) === 0, 2_000)
  assert.ok(Date.now() - setAt < 2_000)
  const onA = await login(a, 'dave', 'dave-password-1')
  assert.equal(await subackCode(onA, 'fleet/z'), 1)
  await Promise.all([dave.endAsync(), onA.endAsync()])
  const invalid = join(a.dir, 'bad-acl.yaml')
  writeFileSync(invalid, 'rules:\n  - action: maybe\n    topics: ["x"]\n')
  const refused = await runCli(['acl', 'set', invalid, '--data-dir', b.dir])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /is not a valid ACL; fix the settings below \(nothing was changed\) \[FLEETMQ_ERR_CONFIG_INVALID\]\n {2}- rules\[0\]\.action: Invalid option/)
})
