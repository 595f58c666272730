/*
 * The marketplace image, end to end: built once (npm run image's buildImage), booted under QEMU
 * TCG with a NoCloud seed, checked the way a user would: MQTT with the generated credentials,
 * anonymous clients refused, TLS with the generated certificate, the credentials file and the
 * serial console. A second VM from the same image proves nothing secret is shared. Join at boot and
 * the user-data options run on nspawn hosts from the image's root filesystem (./nspawn.ts): two
 * more TCG VMs would not fit the time budget of a 2-core machine. Timings are printed as test diagnostics.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import { buildImage, type BuiltImage } from '../../images/build.js'
import { buildBundle } from '../../scripts/bundle.js'
import { runCli } from '../helpers/fleetmq.js'
import { addProbe, createNetwork, createTestKey, type HostNetwork, type TestKey } from '../helpers/hosts.js'
import { bootImageHost, type ImageHost } from './nspawn.js'
import { bootVm, type Vm } from './vm.js'

/** From QEMU start to FleetMQ answering MQTT, under TCG on a busy 2-core machine. */
const BOOT_DEADLINE_MS = 10 * 60_000
const READY_LINE = 'FleetMQ is ready'

let work: string
let image: BuiltImage
let rootfs: string
let key: TestKey
let vm1: Vm
let vm2: Vm
let vm1Ready: Promise<number>
let vm2Ready: Promise<number>
const diagnostics: string[] = []

interface Credentials { password: string; secret: string; devicePassword: string }

function parseCredentials(text: string): Credentials {
  const password = /^admin password\s+(\S+)$/m.exec(text)?.[1]
  const secret = /^cluster secret\s+(\S+)$/m.exec(text)?.[1]
  const devicePassword = /^device password (\S+)$/m.exec(text)?.[1]
  assert.ok(password && secret && devicePassword, `the credentials file lacks the admin password, the cluster secret or the device password:\n${text}`)
  return { password, secret, devicePassword }
}

/** The ports `ss -Hltn` shows listening on an address other than loopback, sorted. */
function outsideListeners(ss: string): string[] {
  const ports = new Set<string>()
  for (const line of ss.trim().split('\n')) {
    const local = line.trim().split(/\s+/)[3] ?? ''
    const match = /^(.*):(\d+)$/.exec(local)
    if (match && !/^(127\.|\[::1\])/.test(match[1])) ports.add(match[2])
  }
  return [...ports].sort((a, b) => Number(a) - Number(b))
}

async function mqttConnect(url: string, options: mqtt.IClientOptions): Promise<mqtt.MqttClient> {
  return mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 20_000, ...options })
}

/** Milliseconds from QEMU start until FleetMQ accepts the generated device credentials over TLS. */
async function readyAfter(vm: Vm): Promise<number> {
  await vm.waitForSerial(READY_LINE, BOOT_DEADLINE_MS)
  const { devicePassword } = parseCredentials((await vm.ssh('sudo cat /root/fleetmq-credentials')).stdout)
  const ca = (await vm.ssh('sudo cat /etc/fleetmq/tls/cert.pem')).stdout
  const client = await mqttConnect(`mqtts://127.0.0.1:${vm.mqttsPort}`, { username: 'device', password: devicePassword, ca, rejectUnauthorized: true })
  const ms = Date.now() - vm.startedAt
  await client.endAsync()
  return ms
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'fleetmq-image-test-'))
  rootfs = join(work, 'rootfs')
  mkdirSync(join(work, 'key'))
  key = await createTestKey(join(work, 'key'))
  // A bundle of this checkout, not whatever dist/ holds: a stale one tests old code.
  const bundleStarted = Date.now()
  const bundle = await buildBundle({ arch: 'x64', outDir: join(work, 'bundle'), log: () => {} })
  diagnostics.push(`bundle: ${((Date.now() - bundleStarted) / 1000).toFixed(0)} s`)
  const started = Date.now()
  image = await buildImage({ arch: 'x64', outDir: join(work, 'out'), bundle: bundle.file, keepRootfs: rootfs, progress: () => {} })
  diagnostics.push(`build: ${((Date.now() - started) / 1000).toFixed(0)} s (${Object.entries(image.timings).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(', ')})`)
  diagnostics.push(`qcow2 (compressed): ${(image.manifest.qcow2.bytes / 1024 / 1024).toFixed(0)} MiB`)
  // Both VMs boot at once: the second one only has to differ from the first.
  ;[vm1, vm2] = await Promise.all(['fleetmq-vm1', 'fleetmq-vm2'].map((name) =>
    bootVm({ name, baseImage: image.qcow2, keyFile: key.file, publicKey: key.publicKey })))
  vm1Ready = readyAfter(vm1)
  vm2Ready = readyAfter(vm2)
  vm1Ready.catch(() => {})
  vm2Ready.catch(() => {})
}, { timeout: 10 * 60_000 })

after(async () => {
  await Promise.all([vm1?.stop(), vm2?.stop()])
  rmSync(work, { recursive: true, force: true })
  for (const line of diagnostics) process.stdout.write(`# ${line}\n`)
})

test('the build writes the qcow2, its SHA-256 and a manifest of what is inside', () => {
  const digest = createHash('sha256').update(readFileSync(image.qcow2)).digest('hex')
  assert.equal(readFileSync(`${image.qcow2}.sha256`, 'utf8'), `${digest}  ${image.manifest.qcow2.file}\n`)
  const manifest = JSON.parse(readFileSync(image.manifestFile, 'utf8')) as BuiltImage['manifest']
  assert.equal(manifest.fleetmq, JSON.parse(readFileSync('package.json', 'utf8')).version)
  assert.match(manifest.node, /^\d+\.\d+\.\d+$/)
  assert.ok(!Number.isNaN(Date.parse(manifest.builtAt)))
  const names = new Set(manifest.packages.map((p) => p.name))
  for (const name of ['openssh-server', 'cloud-init', 'redis-server', 'redis-sentinel', 'linux-image-cloud-amd64', 'unattended-upgrades']) assert.ok(names.has(name), `${name} missing from the manifest`)
})

test('security updates install themselves: unattended-upgrades on, apt lists refreshed daily', () => {
  const periodic = readFileSync(join(rootfs, 'etc/apt/apt.conf.d/20auto-upgrades'), 'utf8')
  assert.match(periodic, /^APT::Periodic::Unattended-Upgrade "1";$/m)
  assert.match(periodic, /^APT::Periodic::Update-Package-Lists "1";$/m)
})

test('root never logs in over SSH; passwords are off', () => {
  const hardening = readFileSync(join(rootfs, 'etc/ssh/sshd_config.d/01-fleetmq-hardening.conf'), 'utf8')
  assert.match(hardening, /^PermitRootLogin no$/m)
  assert.match(hardening, /^PasswordAuthentication no$/m)
})

test('first boot: FleetMQ answers MQTT over TLS with the generated device user and refuses anonymous clients; plaintext 1883 is off', { timeout: BOOT_DEADLINE_MS + 60_000 }, async () => {
  const ms = await vm1Ready
  diagnostics.push(`boot to MQTT over TLS (TCG, two VMs at once): ${(ms / 1000).toFixed(0)} s`)
  const ca = (await vm1.ssh('sudo cat /etc/fleetmq/tls/cert.pem')).stdout
  const tls = { ca, rejectUnauthorized: true }
  const url = `mqtts://127.0.0.1:${vm1.mqttsPort}`
  await assert.rejects(mqttConnect(url, tls), (err: Error & { code?: number }) => {
    assert.equal(err.code, 5, `anonymous CONNECT should get return code 5 (not authorized), got: ${err.message}`) // [MQTT-3.2.2-3]
    return true
  })
  const { devicePassword } = parseCredentials((await vm1.ssh('sudo cat /root/fleetmq-credentials')).stdout)
  await assert.rejects(mqttConnect(url, { ...tls, username: 'device', password: `${devicePassword}x` }))
  const client = await mqttConnect(url, { ...tls, username: 'device', password: devicePassword, clientId: 'sensor-1' })
  await client.subscribeAsync('devices/sensor-1/test', { qos: 1 })
  const received = new Promise<string>((resolve) => client.once('message', (_t, payload) => resolve(payload.toString())))
  await client.publishAsync('devices/sensor-1/test', 'hello from the host', { qos: 1 })
  assert.equal(await received, 'hello from the host')
  await client.endAsync()
  // Nothing listens on 1883: QEMU's forward accepts, then closes when the guest refuses.
  await assert.rejects(mqttConnect(`mqtt://127.0.0.1:${vm1.mqttPort}`, { username: 'device', password: devicePassword, connectTimeout: 10_000 }))
})

test('the instance boots clean: cloud-init status done and systemd running, no failed unit', { timeout: BOOT_DEADLINE_MS }, async () => {
  await vm1Ready
  const { bootProblem, cloudInitStatus } = await import('../../images/customize.js')
  // What users' automation waits on (`cloud-init status --wait`) and what a marketplace scan reads.
  const cloudInit = (await vm1.ssh('cloud-init status --wait --long', { allowFailure: true })).stdout
  const state = (await vm1.ssh('systemctl is-system-running --wait', { allowFailure: true })).stdout.trim()
  const failed = (await vm1.ssh('systemctl --failed --no-legend --no-pager', { allowFailure: true })).stdout
  assert.equal(bootProblem(state, cloudInitStatus(cloudInit), failed, cloudInit), undefined)
})

test('MQTT over TLS on 8883 with the self-signed certificate made for this instance', { timeout: BOOT_DEADLINE_MS }, async () => {
  await vm1Ready
  const ca = (await vm1.ssh('sudo cat /etc/fleetmq/tls/cert.pem')).stdout
  const { password } = parseCredentials((await vm1.ssh('sudo cat /root/fleetmq-credentials')).stdout)
  // The certificate names the instance's addresses, 127.0.0.1 among them: verified, not skipped.
  const client = await mqttConnect(`mqtts://127.0.0.1:${vm1.mqttsPort}`, { username: 'admin', password, ca, rejectUnauthorized: true })
  await client.endAsync()
})

test('the credentials file is root-only (0600) and the serial console says where, never what', { timeout: BOOT_DEADLINE_MS }, async () => {
  await vm1Ready
  assert.equal((await vm1.ssh('sudo stat -c "%a %U" /root/fleetmq-credentials')).stdout.trim(), '600 root')
  const console = vm1.serial()
  assert.match(console, /\/root\/fleetmq-credentials/)
  const { password, secret } = parseCredentials((await vm1.ssh('sudo cat /root/fleetmq-credentials')).stdout)
  assert.ok(!console.includes(password), 'the admin password is on the serial console')
  assert.ok(!console.includes(secret), 'the cluster secret is on the serial console')
  // Before first boot only SSH listened (the build checks that); now Redis speaks TLS only, with
  // the instance's certificate of the cluster CA, and wants a password.
  const redis = await vm1.ssh('sudo redis-cli --tls --cacert /etc/redis/tls/ca.pem -h 127.0.0.1 GET anything', { allowFailure: true })
  assert.match(`${redis.stdout}${redis.stderr}`, /NOAUTH/)
  const plaintext = await vm1.ssh('timeout 5 redis-cli -h 127.0.0.1 GET anything', { allowFailure: true })
  assert.doesNotMatch(`${plaintext.stdout}${plaintext.stderr}`, /NOAUTH|^\(nil\)/m, 'no plaintext Redis')
})

test('a standalone instance keeps management, Redis and Sentinel on loopback behind a default-deny firewall', { timeout: BOOT_DEADLINE_MS }, async () => {
  await vm1Ready
  assert.deepEqual(outsideListeners((await vm1.ssh('ss -Hltn')).stdout), ['22', '8883'])
  assert.match((await vm1.ssh('sudo nft list ruleset')).stdout, /hook input priority filter; policy drop;/)
})

test('a second instance of the same image shares no host key, password, secret or certificate', { timeout: BOOT_DEADLINE_MS + 60_000 }, async () => {
  await Promise.all([vm1Ready, vm2Ready])
  const facts = async (vm: Vm) => ({
    hostKey: (await vm.ssh('cat /etc/ssh/ssh_host_ed25519_key.pub')).stdout.split(' ')[1],
    credentials: parseCredentials((await vm.ssh('sudo cat /root/fleetmq-credentials')).stdout),
    redis: (await vm.ssh('sudo cat /etc/fleetmq/secrets/redis-password')).stdout.trim(),
    cert: (await vm.ssh('sudo openssl x509 -in /etc/fleetmq/tls/cert.pem -noout -fingerprint -sha256')).stdout.trim(),
    machineId: (await vm.ssh('cat /etc/machine-id')).stdout.trim(),
  })
  const [a, b] = await Promise.all([facts(vm1), facts(vm2)]).finally(() =>
    // The VMs are done with: the nspawn tests below get the CPU.
    Promise.all([vm1.stop(), vm2.stop()]))
  assert.notEqual(a.hostKey, b.hostKey)
  assert.notEqual(a.credentials.password, b.credentials.password)
  assert.notEqual(a.credentials.secret, b.credentials.secret)
  assert.notEqual(a.redis, b.redis)
  assert.notEqual(a.cert, b.cert)
  assert.notEqual(a.machineId, b.machineId)
})

/** Resolves once fleetmq-firstboot.service has finished (active); throws with its journal when it failed. */
async function waitForFirstBoot(host: ImageHost, timeoutMs: number): Promise<void> {
  const journal = async (): Promise<string> => (await host.exec('journalctl -u fleetmq-firstboot --no-pager | tail -40', { allowFailure: true })).stdout
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const state = (await host.exec('systemctl show -p ActiveState --value fleetmq-firstboot.service', { allowFailure: true })).stdout.trim()
    if (state === 'active') return
    if (state === 'failed') throw new Error(`first boot failed on ${host.name}:\n${await journal()}`)
    await sleep(1000)
  }
  throw new Error(`first boot did not finish on ${host.name} within ${timeoutMs / 1000} s:\n${await journal()}\n${host.consoleLog().slice(-2000)}`)
}

/** A test CA and a certificate it signs for `address`: what a user brings with `tls_cert`/`tls_key`. */
async function userCertificate(dir: string, address: string): Promise<{ ca: string; cert: string; key: string }> {
  const { run } = await import('../../images/run.js')
  mkdirSync(dir, { recursive: true })
  const f = (name: string) => join(dir, name)
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=FleetMQ test CA', '-keyout', f('ca.key'), '-out', f('ca.pem')])
  await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', '/CN=seed.example.test', '-keyout', f('key.pem'), '-out', f('cert.csr')])
  writeFileSync(f('ext.cnf'), `subjectAltName=DNS:seed.example.test,IP:${address}\nextendedKeyUsage=serverAuth\n`)
  await run('openssl', ['x509', '-req', '-in', f('cert.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', f('ext.cnf'), '-out', f('cert.pem')])
  return { ca: readFileSync(f('ca.pem'), 'utf8'), cert: readFileSync(f('cert.pem'), 'utf8'), key: readFileSync(f('key.pem'), 'utf8') }
}

const yamlBlock = (text: string): string => `|\n${text.trim().split('\n').map((line) => `    ${line}`).join('\n')}`

test('user-data `admin_password_hash`, `tls_cert`/`tls_key` and `join:`: a seed with the user\'s password and certificate, and a second instance in its cluster (nspawn hosts from the image)', { timeout: 8 * 60_000 }, async () => {
  let network: HostNetwork | undefined
  const hosts: ImageHost[] = []
  let passed = false
  try {
    network = await createNetwork()
    // The seed's admin password is the user's, given only as a hash made by `fleetmq user add`.
    const adminPassword = 'the-users-own-admin-password'
    const usersFile = join(work, 'hash-source.json')
    const added = await runCli(['user', 'add', 'admin', '--admin', '--password-stdin', '--users-file', usersFile], {}, `${adminPassword}\n`)
    assert.equal(added.code, 0, added.stderr)
    const hash = (JSON.parse(readFileSync(usersFile, 'utf8')) as { users: Array<{ hash: string }> }).users[0].hash
    const seedAddress = `${network.prefix}.11`
    const tls = await userCertificate(join(work, 'user-tls'), seedAddress)
    // The two instances are each other's cluster peers; the probe's address is not among them.
    const peers = `[${network.prefix}.11, ${network.prefix}.12]`
    const seed = await bootImageHost(network, rootfs, 'seed', 1,
      `fleetmq:\n  admin_password_hash: '${hash}'\n  tls_cert: ${yamlBlock(tls.cert)}\n  tls_key: ${yamlBlock(tls.key)}\n  cluster_peers: ${peers}\n`)
    hosts.push(seed)
    assert.equal(seed.address, seedAddress)
    await waitForFirstBoot(seed, 4 * 60_000)
    const seedText = (await seed.exec('cat /root/fleetmq-credentials')).stdout
    assert.match(seedText, /^admin password\s+\(set from the user-data hash; not stored here\)$/m)
    assert.ok(!seedText.includes(hash), 'the credentials file repeats the password hash')
    const seedSecret = /^cluster secret\s+(\S+)$/m.exec(seedText)?.[1]
    assert.ok(seedSecret, seedText)
    // MQTT over TLS with the user's certificate, verified against the user's CA.
    const tlsClient = await mqttConnect(`mqtts://${seed.address}:8883`, { username: 'admin', password: adminPassword, ca: tls.ca, rejectUnauthorized: true })
    await tlsClient.endAsync()
    await assert.rejects(mqttConnect(`mqtts://${seed.address}:8883`, { username: 'admin', password: hash, ca: tls.ca }), (err: Error & { code?: number }) => {
      assert.equal(err.code, 4, `the hash itself must not be a password: ${err.message}`) // [MQTT-3.2.2-3] 4 = bad user name or password
      return true
    })

    // The joiner opts into plaintext MQTT; the seed did not.
    const joiner = await bootImageHost(network, rootfs, 'joiner', 2,
      `fleetmq:\n  join: ${seed.address}\n  cluster_secret: ${seedSecret}\n  cluster_peers: ${peers}\n  mqtt_plaintext: true\n`)
    hosts.push(joiner)
    await waitForFirstBoot(joiner, 4 * 60_000)
    const status = JSON.parse((await seed.exec('fleetmq cluster status --json')).stdout) as { cluster: string; nodes: Array<{ id: string; health: string }> }
    assert.deepEqual(status.nodes.map((n) => [n.id, n.health]).sort(), [['joiner', 'up'], ['seed', 'up']])
    // A message published on the joiner reaches a subscriber on the seed.
    // Users are the cluster's: the joiner makes no admin of its own and says whose password applies.
    const joinerCredentialsFile = (await joiner.exec('cat /root/fleetmq-credentials')).stdout
    assert.match(joinerCredentialsFile, /admin password {2}the cluster's: the seed's admin password/)
    // The members reach each other's Redis (which asks for the password); a non-member reaches
    // neither Redis, Sentinel nor management, and the seed's plaintext port stays closed.
    const fromJoiner = await joiner.exec(`redis-cli --tls --cacert /etc/redis/tls/ca.pem -h ${seed.address} -p 6379 PING`, { allowFailure: true })
    assert.match(`${fromJoiner.stdout}${fromJoiner.stderr}`, /NOAUTH/)
    const probe = await addProbe(network, 70)
    try {
      assert.equal(await probe.canConnect(seed.address, 8883), true, 'the probe reaches the seed at all')
      for (const port of [6379, 26379, 18083, 1883]) assert.equal(await probe.canConnect(seed.address, port), false, `seed port ${port} is closed to a non-member`)
      for (const port of [6379, 26379, 18083]) assert.equal(await probe.canConnect(joiner.address, port), false, `joiner port ${port} is closed to a non-member`)
      assert.equal(await probe.canConnect(joiner.address, 1883), true, 'mqtt_plaintext: true opens 1883')
    } finally {
      await probe.close()
    }
    const sub = await mqttConnect(`mqtts://${seed.address}:8883`, { username: 'admin', password: adminPassword, ca: tls.ca })
    await sub.subscribeAsync('fleet/join', { qos: 1 })
    const received = new Promise<string>((resolve) => sub.once('message', (_t, payload) => resolve(payload.toString())))
    const pub = await mqttConnect(`mqtt://${joiner.address}:1883`, { username: 'admin', password: adminPassword })
    await pub.publishAsync('fleet/join', 'across the cluster', { qos: 1 })
    assert.equal(await Promise.race([received, sleep(20_000).then(() => 'nothing within 20 s')]), 'across the cluster')
    await Promise.all([sub.endAsync(), pub.endAsync()])
    passed = true
  } finally {
    // Every host is stopped and the network removed even when one stop fails; the failure is reported.
    const results = await Promise.allSettled(hosts.reverse().map((host) => host.stop()))
    await network?.close()
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    // A failed stop fails the test, without hiding the test's own failure.
    for (const r of failed) diagnostics.push(`teardown: ${(r.reason as Error).message}`)
    if (failed.length && passed) throw new AggregateError(failed.map((r) => r.reason), `stopping the image hosts failed: ${failed.map((r) => (r.reason as Error).message).join('; ')}`)
  }
})

test('a fresh standalone instance (nspawn host from the image): from another address only SSH and MQTT over TLS answer; the device user from the credentials file publishes with mosquitto over TLS; open-cluster opens it to its peers only', { timeout: 5 * 60_000 }, async () => {
  const network = await createNetwork()
  let host: ImageHost | undefined
  const probe = await addProbe(network, 71)
  try {
    host = await bootImageHost(network, rootfs, 'standalone', 4)
    await waitForFirstBoot(host, 4 * 60_000)
    const text = (await host.exec('cat /root/fleetmq-credentials')).stdout
    const { devicePassword, password } = parseCredentials(text)
    assert.match(text, new RegExp(`^MQTT over TLS {3}mqtts://${host.address.replace(/\./g, '\\.')}:8883 `, 'm'))
    assert.doesNotMatch(text, /mqtt:\/\//, 'no plaintext endpoint is offered')
    assert.ok(text.indexOf('admin password') > text.indexOf('## Management only'), 'the admin credentials are apart, labeled for management')
    assert.equal((await host.exec('stat -c "%a %U" /root/fleetmq-credentials')).stdout.trim(), '600 root')
    assert.match((await host.exec('nft list ruleset')).stdout, /hook input priority filter; policy drop;/)
    assert.deepEqual(outsideListeners((await host.exec('ss -Hltn')).stdout), ['22', '8883'])
    for (const port of [6379, 26379, 18083, 1883]) assert.equal(await probe.canConnect(host.address, port), false, `port ${port} is closed from another address`)
    assert.equal(await probe.canConnect(host.address, 22), true, 'SSH answers')

    // What a user does with the credentials file: mosquitto over TLS, as the device user, from two
    // other machines (the probe subscribes, the test side publishes), the certificate verified.
    const ca = join(work, 'standalone-ca.pem')
    writeFileSync(ca, (await host.exec('cat /etc/fleetmq/tls/cert.pem')).stdout)
    const { run } = await import('../../images/run.js')
    const tlsDevice = ['-h', host.address, '-p', '8883', '--cafile', ca, '-u', 'device', '-P', devicePassword, '-q', '1']
    const sub = probe.exec('mosquitto_sub', [...tlsDevice, '-i', 'sensor-1', '-t', 'users/device/#', '-C', '1', '-W', '60'])
    await sleep(3000)
    await run('mosquitto_pub', [...tlsDevice, '-i', 'sensor-2', '-t', 'users/device/temperature', '-m', '21.5'])
    assert.equal((await sub).stdout.trim(), '21.5')
    // The admin password is not the device's.
    const wrong = await run('mosquitto_pub', [...tlsDevice.slice(0, 9), password, '-t', 'users/device/x', '-m', 'x'], { allowFailure: true })
    assert.notEqual(wrong.code, 0)

    // Opened later for the probe's address only: now the probe reaches management, Redis and
    // Sentinel, which listen on the instance's address too; the test side, not a peer, still does not.
    const opened = await host.exec(`/usr/lib/fleetmq/firstboot/fleetmq-firstboot open-cluster ${probe.address}`)
    assert.match(opened.stdout, new RegExp(`join: ${host.address.replace(/\./g, '\\.')}:18083`))
    assert.deepEqual(outsideListeners((await host.exec('ss -Hltn')).stdout), ['22', '6379', '8883', '18083', '26379'])
    for (const port of [6379, 26379, 18083]) assert.equal(await probe.canConnect(host.address, port), true, `port ${port} is open to the peer`)
    assert.equal(await probe.canConnect(host.address, 1883), false)
    const fromTestSide = await run('timeout', ['3', 'bash', '-c', `exec 3<>/dev/tcp/${host.address}/6379`], { allowFailure: true })
    assert.notEqual(fromTestSide.code, 0, 'Redis stays closed to an address that is not a peer')
  } finally {
    await host?.stop()
    await probe.close()
    await network.close()
  }
})

test('user-data `provisioning: external` (what the Pulumi program sends): first boot makes no secrets and starts nothing', { timeout: 4 * 60_000 }, async () => {
  const network = await createNetwork()
  let host: ImageHost | undefined
  try {
    host = await bootImageHost(network, rootfs, 'pulumi-node', 3, 'fleetmq:\n  provisioning: external\n')
    await waitForFirstBoot(host, 3 * 60_000)
    const journal = (await host.exec('journalctl -u fleetmq-firstboot --no-pager')).stdout
    assert.match(journal, /provisioning: external in the user-data: nothing to do here/)
    assert.equal((await host.exec('test -e /root/fleetmq-credentials && echo present || echo absent')).stdout.trim(), 'absent')
    assert.equal((await host.exec('ls -A /etc/fleetmq/secrets 2>/dev/null | wc -l')).stdout.trim(), '0', 'no secrets of its own')
    assert.equal((await host.exec('systemctl is-active fleetmq.service redis-server.service', { allowFailure: true })).stdout.trim(), 'inactive\ninactive')
    assert.match((await host.exec('cat /var/lib/fleetmq-provision/firstboot-done')).stdout, /^\d{4}-/, 'it does not run again at the next boot')
  } finally {
    await host?.stop()
    await network.close()
  }
})

test('the build refuses an image where a service listens before first boot', { timeout: 3 * 60_000 }, async () => {
  const { checkBootBeforeFirstboot } = await import('../../images/customize.js')
  const { run } = await import('../../images/run.js')
  const base = join(work, 'dirty-ports')
  const merged = join(base, 'root')
  for (const dir of ['upper', 'work', 'root']) mkdirSync(join(base, dir), { recursive: true })
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${rootfs},upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`, merged])
  try {
    await run('systemctl', [`--root=${merged}`, 'enable', 'redis-server.service'])
    await assert.rejects(checkBootBeforeFirstboot(merged, () => {}), /listens on port\(s\) 6379 besides SSH/)
  } finally {
    await run('umount', [merged], { allowFailure: true })
  }
})
