import assert from 'node:assert/strict'
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { get as httpGet } from 'node:http'
import { get as httpsGet } from 'node:https'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { after, before, test } from 'node:test'
import type { Client as SshClient } from 'ssh2'
import { connect as tcpConnect } from 'node:net'
import { ensureClusterCaCertificate } from '../../broker/cluster/cluster-ca.js'
import { renderNodeEnv } from '../../infra/node-env.js'
import { buildBundle, type BuiltBundle } from '../../scripts/bundle.js'
import { connectSsh, ProvisionError, type ProvisionPhase } from '../../scripts/lib/remote-provision.js'
import { addProbe, bootHost, createNetwork, createTestKey, HOST_USER, type Host, type HostNetwork, type TestKey } from '../helpers/hosts.js'
import { connectProxied } from './proxied-mqtt.js'
import { provisionOver, sudo as sudoOn } from './remote.js'

/*
 * One fresh Debian 12 host (systemd-nspawn, private bridge, no route out) provisioned over SSH
 * exactly as `pulumi up` does it: the stage uploaded to /var/tmp/fleetmq-stage, node.env from
 * infra/node-env.ts, secrets as files, then `sudo bash .../fleetmq-provision <phase> ...`.
 */

const work = mkdtempSync(join(tmpdir(), 'fleetmq-provision-test-'))
const SECRETS = { 'cluster-secret': 'cluster-secret-for-the-host-test-0123456789', 'admin-password': 'admin-password-42', 'redis-password': 'redis-password-42' }
let bundle: BuiltBundle
let network: HostNetwork
let key: TestKey
let host: Host
let ssh: SshClient

const log = (line: string) => process.stderr.write(`# ${line}\n`)
const runLocal = promisify(execFile)
/** redis-cli over TLS with the host's certificate of the cluster CA, and the Redis password. */
const REDIS_CLI = `REDISCLI_AUTH=${SECRETS['redis-password']} redis-cli --tls --cacert /etc/redis/tls/ca.pem --cert /etc/redis/tls/node.pem --key /etc/redis/tls/node-key.pem`

before(async () => {
  bundle = await buildBundle({ arch: 'x64', outDir: join(work, 'dist'), log: () => {} })
  network = await createNetwork()
  key = await createTestKey(mkdtempSync(join(work, 'key-')))
  host = await bootHost(network, 'solo', { index: 1, key, log })
  ssh = await connectSsh({ host: host.address, username: HOST_USER, privateKey: key.privateKey, hostKey: { fingerprint: host.hostKeyFingerprint } })
}, { timeout: 400_000 })

after(async () => {
  ssh?.end()
  await host?.stop()
  await network?.close()
  rmSync(work, { recursive: true, force: true })
})

function nodeEnv(): string {
  return renderNodeEnv({
    clusterName: 'solo', nodeNumber: 1, nodeName: 'solo', advertiseAddress: host.address, seedAddress: host.address, redis: { kind: 'colocated' }, wss: false,
    // The test side stands in for the other brokers and for the load balancer; the probe (another
    // address on the same network) is neither.
    peers: [network.testAddress], plaintextFrom: [network.testAddress],
  })
}

const sudo = (command: string): Promise<string> => sudoOn(ssh, command)

async function provision(phases: ProvisionPhase[], options: { envText?: string; bundleFile?: string } = {}): Promise<string> {
  return provisionOver(ssh, phases, { envText: options.envText ?? nodeEnv(), bundleFile: options.bundleFile ?? bundle.file, secrets: SECRETS })
}

/** When each service last started and its PID: equal snapshots mean nothing restarted. */
async function serviceStates(): Promise<string> {
  return sudo('systemctl show -p ActiveEnterTimestamp -p MainPID fleetmq.service redis-server.service redis-sentinel.service')
}

async function configFiles(): Promise<string> {
  // The admin user is the cluster's, in Redis.
  return sudo(`sha256sum /etc/fleetmq/fleetmq.env /etc/fleetmq/fleetmq.yaml /etc/fleetmq/secrets/* /etc/systemd/system/fleetmq.service /etc/sysctl.d/60-fleetmq.conf /etc/fleetmq/cluster-tls/* /etc/redis/tls/*; ${REDIS_CLI} HGET fleetmq:solo:users admin | sha256sum; readlink /opt/fleetmq/current; ls /opt/fleetmq`)
}

const mqttOptions = { username: 'admin', password: SECRETS['admin-password'] }

async function pubSub(topic: string): Promise<void> {
  const subscriber = await connectProxied(host.address, 1883, { ...mqttOptions, clientId: `sub-${topic.replace(/\W/g, '')}` })
  const publisher = await connectProxied(host.address, 1883, { ...mqttOptions, clientId: `pub-${topic.replace(/\W/g, '')}` })
  try {
    await subscriber.subscribeAsync(topic, { qos: 1 })
    const received = new Promise<string>((resolve) => subscriber.once('message', (_t, payload) => resolve(payload.toString())))
    await publisher.publishAsync(topic, 'hello through the bridge', { qos: 1 })
    assert.equal(await received, 'hello through the bridge')
  } finally {
    await Promise.all([subscriber.endAsync(), publisher.endAsync()])
  }
}

test('install, configure and join provision a fresh host over SSH; it serves MQTT behind PROXY v2', { timeout: 300_000 }, async (t) => {
  const started = Date.now()
  const output = await provision(['install', 'configure', 'join'])
  const seconds = (Date.now() - started) / 1000
  t.diagnostic(`provisioning one host (upload, install, configure, join): ${seconds.toFixed(1)} s; host booted to SSH in ${(host.bootMs / 1000).toFixed(1)} s`)
  assert.match(output, /node solo is ready/)
  assert.match(output, /cluster "solo": 1 nodes up \(solo\)/)

  // The management API answers from outside the host over https, as the other brokers reach it:
  // its certificate is of the CA every holder of the cluster secret derives.
  const caFile = join(work, 'cluster-ca.pem')
  ensureClusterCaCertificate(SECRETS['cluster-secret'], caFile)
  assert.equal(await httpsStatus(`https://${host.address}:18083/readyz`, readFileSync(caFile)), 200)
  assert.doesNotMatch(await httpsStatus(`http://${host.address}:18083/readyz`).then(String, (err: Error) => err.message), /^200$/, 'no plain HTTP')
  await pubSub('provision/first')
  // The listener requires PROXY protocol (behind the NLB): a bare MQTT connection gets no CONNACK.
  assert.equal(await bareConnect(), 'closed without CONNACK')

  // The layout and the unit, as an operator would inspect them.
  const releases = await sudo('readlink /opt/fleetmq/current')
  assert.equal(releases, `/opt/fleetmq/${bundle.manifest.version}-${bundle.sha256.slice(0, 12)}`)
  const unit = await sudo('systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp -p Restart -p RestartUSec -p LimitNOFILE fleetmq.service')
  for (const property of ['User=fleetmq', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'Restart=always', 'RestartUSec=5s', 'LimitNOFILE=1048576']) {
    assert.ok(unit.split('\n').includes(property), `fleetmq.service has ${property}:\n${unit}`)
  }
  assert.equal(await sudo('ps -o user= -p "$(systemctl show -p MainPID --value fleetmq.service)"'), 'fleetmq')
  const brokerEnv = await sudo('cat /etc/fleetmq/fleetmq.env')
  assert.match(brokerEnv, /^FLEETMQ_CLUSTER__NAME='solo'$/m)
  assert.doesNotMatch(brokerEnv, /^FLEETMQ_PROVISION__/m, 'the broker never sees the provisioning keys')
  assert.equal(await sudo('stat -c "%a %U:%G" /etc/fleetmq/secrets/cluster-secret /etc/fleetmq/fleetmq.env'), '640 root:fleetmq\n640 root:fleetmq')
  assert.equal(await sudo('ls /var/tmp/fleetmq-stage/secrets | wc -l'), '0', 'no secret stays in the stage')
  // Redis: this host holds the primary, with a password, watched by its Sentinel, all over TLS.
  assert.match(await sudo(`${REDIS_CLI} -h 127.0.0.1 ROLE | head -n 1`), /^master$/)
  assert.match(await sudo(`${REDIS_CLI} -h 127.0.0.1 -p 26379 SENTINEL get-master-addr-by-name fleetmq | head -n 1`), new RegExp(`^${host.address.replace(/\./g, '\\.')}$`))
  const tlsOnly = '--tls --cacert /etc/redis/tls/ca.pem'
  assert.match(await sudo(`redis-cli ${tlsOnly} -h 127.0.0.1 PING 2>&1 || true`), /NOAUTH/, 'Redis refuses clients without the password')
  // The Sentinel listens on the node's address for the other members: without the password it takes no command at all.
  assert.match(await sudo(`redis-cli ${tlsOnly} -h ${host.address} -p 26379 SENTINEL get-master-addr-by-name fleetmq 2>&1 || true`), /NOAUTH/, 'Sentinel refuses clients without the password')
  // Nothing answers in plaintext, on loopback either.
  for (const target of [`-h 127.0.0.1 -p 6379`, `-h ${host.address} -p 6379`, `-h ${host.address} -p 26379`]) {
    assert.doesNotMatch(await sudo(`REDISCLI_AUTH=${SECRETS['redis-password']} timeout 5 redis-cli ${target} PING 2>&1 || true`), /PONG|NOAUTH/, `plaintext ${target}`)
  }
  assert.match(brokerEnv, /^FLEETMQ_CLUSTER__REDIS__TLS__CA_FILE='\/etc\/fleetmq\/cluster-tls\/ca\.pem'$/m, 'the broker verifies Redis and the Sentinels')
  assert.match(brokerEnv, /^FLEETMQ_MGMT__TLS__CERT='\/etc\/fleetmq\/cluster-tls\/node\.pem'$/m)
  assert.equal(await sudo('stat -c "%a %U:%G" /etc/fleetmq/cluster-tls/node-key.pem /etc/redis/tls/node-key.pem'), '640 root:fleetmq\n640 redis:redis')
  assert.equal(await sudo('grep -h "^protected-mode" /etc/redis/redis.conf /etc/redis/sentinel.conf'), 'protected-mode yes\nprotected-mode yes')
  assert.match(brokerEnv, /^FLEETMQ_CLUSTER__REDIS__SENTINEL_PASSWORD_FILE='\/etc\/fleetmq\/secrets\/redis-password'$/m, 'the broker authenticates to the Sentinels')
})

/** The status of a GET; https verified against `ca`. */
function httpsStatus(url: string, ca?: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsGet : httpGet)(url, { ca, timeout: 10_000 }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
  })
}

test('the host firewall denies by default: a non-member address reaches SSH only; the members reach management, Redis and Sentinel, the load balancer MQTT', { timeout: 120_000 }, async () => {
  const ruleset = await sudo('nft list ruleset')
  assert.match(ruleset, /hook input priority filter; policy drop;/)
  assert.equal(await sudo('systemctl is-enabled nftables.service'), 'enabled', 'the rules come back after a reboot')
  assert.match(await sudo('cat /etc/nftables.conf'), /^include "\/etc\/fleetmq\/firewall\.nft"$/m)
  const probe = await addProbe(network, 60)
  try {
    // Reachable at all (SSH), so the closed ports below are the firewall's doing, not the network's.
    assert.equal(await probe.canConnect(host.address, 22), true, 'SSH is open to everyone')
    for (const port of [18083, 6379, 26379, 1883]) {
      assert.equal(await probe.canConnect(host.address, port), false, `port ${port} is closed to an address that is neither a member nor the load balancer`)
    }
  } finally {
    await probe.close()
  }
  // The member (the test side) reaches Redis, which asks it for the password; and the management API.
  const caFile = join(work, 'cluster-ca.pem')
  ensureClusterCaCertificate(SECRETS['cluster-secret'], caFile)
  const redis = await runLocal('redis-cli', ['--tls', '--cacert', caFile, '-h', host.address, '-p', '6379', 'PING']).catch((err: { stdout?: string; stderr?: string }) => err)
  assert.match(`${redis.stdout ?? ''}${redis.stderr ?? ''}`, /NOAUTH/)
  assert.equal(await httpsStatus(`https://${host.address}:18083/readyz`, readFileSync(caFile)), 200)
})

/** A plain TCP MQTT 3.1.1 CONNECT, without the PROXY header the listener requires. */
async function bareConnect(): Promise<string> {
  // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60, client id "bare".
  const connect = Buffer.from([0x10, 0x10, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, 0x62, 0x61, 0x72, 0x65])
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: host.address, port: 1883 }, () => socket.write(connect))
    let answer = 'closed without CONNACK'
    socket.on('data', (data: Buffer) => { if (data[0] === 0x20) answer = 'CONNACK' })
    socket.on('error', () => {})
    socket.on('close', () => resolve(answer))
    socket.setTimeout(20_000, () => { answer = 'still open after 20 s'; socket.destroy() })
  })
}

test('every phase a second time changes nothing and restarts nothing', { timeout: 300_000 }, async () => {
  const servicesBefore = await serviceStates()
  const filesBefore = await configFiles()
  const output = await provision(['install', 'configure', 'join'])
  assert.doesNotMatch(output, /installed |wrote |restarting |starting |unpacking |added the admin|creating /, `a second run acts on nothing:\n${output}`)
  assert.equal(await serviceStates(), servicesBefore, 'no service restarted')
  assert.equal(await configFiles(), filesBefore, 'no file changed')
  await pubSub('provision/second')
})

test('a setting the broker refuses fails configure, names the key, and the node keeps running', { timeout: 120_000 }, async () => {
  const before = await serviceStates()
  const bad = `${nodeEnv()}FLEETMQ_LIMITS__MAX_KEEP_ALIVE='0'\n`
  const failure = await provision(['configure'], { envText: bad }).then(() => undefined, (err: unknown) => err)
  assert.ok(failure instanceof ProvisionError, 'configure fails')
  assert.equal(failure.step, 'configure')
  assert.match(failure.output, /limits\.maxKeepAlive/)
  assert.match(failure.message, /the broker refuses these settings.*nothing was changed/)
  assert.equal(await serviceStates(), before, 'nothing restarted')
  assert.doesNotMatch(await sudo('cat /etc/fleetmq/fleetmq.env'), /MAX_KEEP_ALIVE/, 'the installed settings are untouched')
  await pubSub('provision/after-bad-env')
})

test('upgrade to a second bundle build keeps a persistent session and the old release for rollback', { timeout: 400_000 }, async () => {
  const durable = { ...mqttOptions, clientId: 'durable-device', clean: false }
  const device = await connectProxied(host.address, 1883, durable)
  await device.subscribeAsync('fleet/durable', { qos: 1 })
  await device.endAsync()
  const publisher = await connectProxied(host.address, 1883, { ...mqttOptions, clientId: 'upgrade-publisher' })
  await publisher.publishAsync('fleet/durable', 'queued across the upgrade', { qos: 1 })
  await publisher.endAsync()

  const second = await buildBundle({ arch: 'x64', outDir: join(work, 'dist2'), sourceDateEpoch: bundle.manifest.sourceDateEpoch + 60, log: () => {} })
  assert.notEqual(second.sha256, bundle.sha256)
  const redisBefore = await sudo('systemctl show -p MainPID --value redis-server.service')
  const brokerBefore = await sudo('systemctl show -p MainPID --value fleetmq.service')
  const output = await provision(['upgrade'], { bundleFile: second.file })
  const oldRelease = `/opt/fleetmq/${bundle.manifest.version}-${bundle.sha256.slice(0, 12)}`
  const newRelease = `/opt/fleetmq/${second.manifest.version}-${second.sha256.slice(0, 12)}`
  assert.match(output, /this node runs .* stays for rollback/)
  assert.equal(await sudo('readlink /opt/fleetmq/current'), newRelease)
  assert.equal(await sudo(`test -x ${oldRelease}/bin/fleetmq && echo kept`), 'kept', 'the old release stays')
  assert.notEqual(await sudo('systemctl show -p MainPID --value fleetmq.service'), brokerBefore, 'the broker restarted')
  assert.equal(await sudo('systemctl show -p MainPID --value redis-server.service'), redisBefore, 'Redis did not')
  assert.match(await sudo('readlink -f /proc/"$(systemctl show -p MainPID --value fleetmq.service)"/exe'), new RegExp(`^${newRelease}/node/bin/node$`))

  let deliver: (text: string) => void = () => {}
  const message = new Promise<string>((resolve) => { deliver = resolve })
  const back = await connectProxied(host.address, 1883, durable, (_topic, payload) => deliver(payload.toString()))
  try {
    assert.equal(await message, 'queued across the upgrade', 'the offline message survives the restart')
  } finally {
    await back.endAsync()
  }

  const again = await provision(['upgrade'], { bundleFile: second.file })
  assert.match(again, /is already the current one/)
})

test('an upgrade whose release never becomes ready goes back to the old release and the settings file it ran with', { timeout: 400_000 }, async () => {
  // A release that fails at start (its entry point exits) and ships a settings file of its own.
  const broken = join(work, 'broken')
  const unpacked = join(broken, 'unpacked')
  mkdirSync(unpacked, { recursive: true })
  const second = await buildBundle({ arch: 'x64', outDir: join(work, 'dist3'), sourceDateEpoch: bundle.manifest.sourceDateEpoch + 120, log: () => {} })
  await runLocal('tar', ['-xzf', second.file, '-C', unpacked])
  const [top] = readdirSync(unpacked)
  writeFileSync(join(unpacked, top, 'bin/fleetmq.js'), '#!/usr/bin/env node\nprocess.exit(3)\n')
  appendFileSync(join(unpacked, top, 'config/fleetmq.yaml'), '# the broken release\'s own settings\n')
  const brokenBundle = join(broken, basename(second.file))
  await runLocal('tar', ['-czf', brokenBundle, '-C', unpacked, top])

  const settingsBefore = await sudo('sha256sum /etc/fleetmq/fleetmq.yaml')
  const releaseBefore = await sudo('readlink /opt/fleetmq/current')
  const failure = await provision(['upgrade'], { bundleFile: brokenBundle }).then(() => undefined, (err: unknown) => err)
  assert.ok(failure instanceof ProvisionError, 'the upgrade fails')
  assert.match(`${failure.message}\n${failure.output}`, /did not become ready; this node runs .* again/)
  assert.equal(await sudo('readlink /opt/fleetmq/current'), releaseBefore)
  assert.equal(await sudo('sha256sum /etc/fleetmq/fleetmq.yaml'), settingsBefore, 'the old settings file is back')
  assert.equal(await sudo('ls -A /etc/fleetmq | grep -c before-upgrade || true'), '0', 'no copy left behind')
  await pubSub('provision/after-rollback')
})
