import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { runCli, startFleetmq } from '../helpers/fleetmq.js'
import { makeCertificates, makeClientCertificate } from '../helpers/tls.js'
import { subackCodes } from '../helpers/mqtt-client.js'
import { runProgram as run } from '../helpers/program.js'

const ALICE = { username: 'alice', password: 'alice-secret-1', admin: true }
const BOB = { username: 'bob', password: 'bob-secret-22' }

const connect = (port: number, options: IClientOptions): Promise<MqttClient> =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 10_000, ...options })

/** The CONNACK return code (3.1.1) or reason code (5.0) of a refused connection. */
async function refusal(port: number, options: IClientOptions): Promise<number> {
  try {
    const client = await connect(port, options)
    await client.endAsync()
  } catch (err) {
    return (err as { code: number }).code
  }
  throw new Error(`the connection with ${JSON.stringify({ ...options, password: '…' })} was accepted`)
}

test('users added with fleetmq user add connect with their password; wrong or missing credentials are refused with 4 / 0x86, anonymous with 5 / 0x87', async () => {
  const broker = await startFleetmq({ users: [ALICE, BOB] })
  try {
    const port = broker.ports.mqtt
    for (const protocolVersion of [4, 5] as const) {
      const client = await connect(port, { protocolVersion, username: 'bob', password: BOB.password })
      await client.endAsync()
    }
    // 3.1.1 CONNACK return code 4 "bad user name or password", 5 "not authorized" (§3.2.2.3);
    // 5.0 reason 0x86 Bad User Name or Password, 0x87 Not authorized (§3.2.2.2).
    assert.equal(await refusal(port, { protocolVersion: 4, username: 'bob', password: 'wrong-password' }), 4)
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'bob', password: 'wrong-password' }), 0x86)
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'nobody', password: BOB.password }), 0x86)
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'bob' }), 0x86)
    assert.equal(await refusal(port, { protocolVersion: 4 }), 5)
    assert.equal(await refusal(port, { protocolVersion: 5 }), 0x87)

    // mosquitto_pub as a third-party client, to a topic the ACL lets every user publish to (its own).
    const pub = (version: string, password: string) =>
      run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-V', version, '-u', 'bob', '-P', password, '-t', 'users/bob/x', '-m', 'hi', '-q', '1'])
    assert.equal((await pub('mqttv311', BOB.password)).code, 0)
    assert.equal((await pub('mqttv5', BOB.password)).code, 0)
    const refused311 = await pub('mqttv311', 'wrong-password')
    assert.notEqual(refused311.code, 0)
    assert.match(refused311.stderr, /bad user name or password/i)
    const refused5 = await pub('mqttv5', 'wrong-password')
    assert.notEqual(refused5.code, 0)
    assert.match(refused5.stderr, /bad user name or password/i)

    // A refusal is logged at info with the client id, the username and the real address; never a password.
    const failure = await broker.waitForLog((l) => /authentication failed/.test(l.msg) && l.username === 'bob' && l.reason === 'wrong password')
    assert.equal(failure.level, 30)
    assert.equal(failure.remoteAddress, '127.0.0.1')
    assert.equal(typeof failure.clientId, 'string')
    const logText = JSON.stringify(broker.logs)
    for (const secret of [BOB.password, ALICE.password, 'wrong-password']) assert.ok(!logText.includes(secret), 'a password appears in the log')
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

test('allowAnonymous lets clients without credentials in, with a warning, and still checks the credentials clients send', async () => {
  const broker = await startFleetmq({ users: [BOB], config: { allowAnonymous: true } })
  try {
    assert.ok(broker.logs.some((l) => l.level === 40 && /allowAnonymous is on/.test(l.msg)))
    const anonymous = await connect(broker.ports.mqtt, { protocolVersion: 5 })
    await anonymous.endAsync()
    assert.equal(await refusal(broker.ports.mqtt, { protocolVersion: 5, username: 'bob', password: 'wrong-password' }), 0x86)
  } finally {
    await broker.stop()
  }
})

test('SIGHUP reloads the user store: a new user and a new password apply, connected clients stay connected', async () => {
  const broker = await startFleetmq({ users: [ALICE, BOB] })
  try {
    const port = broker.ports.mqtt
    const alice = await connect(port, { protocolVersion: 5, username: 'alice', password: ALICE.password })
    // alice is an admin; carol, a device, publishes below her own users/carol/ (docs/auth.md).
    await alice.subscribeAsync('users/carol/#', { qos: 1 })
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'carol', password: 'carol-secret-3' }), 0x86)

    assert.equal((await runCli(['user', 'add', 'carol', '--password-stdin', '--data-dir', broker.dir], {}, 'carol-secret-3\n')).code, 0)
    assert.equal((await runCli(['user', 'passwd', 'bob', '--password-stdin', '--data-dir', broker.dir], {}, 'bob-new-secret\n')).code, 0)
    broker.process.kill('SIGHUP')
    await broker.waitForLog((l) => /reloaded the user store: 3 users/.test(l.msg))

    const carol = await connect(port, { protocolVersion: 5, username: 'carol', password: 'carol-secret-3' })
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'bob', password: BOB.password }), 0x86)
    const bob = await connect(port, { protocolVersion: 4, username: 'bob', password: 'bob-new-secret' })
    // alice's connection from before the reload still works both ways.
    assert.ok(alice.connected)
    const received = new Promise<string>((resolve) => alice.on('message', (_t, payload) => resolve(payload.toString())))
    await carol.publishAsync('users/carol/chat', 'hello after reload', { qos: 1 })
    assert.equal(await received, 'hello after reload')
    await Promise.all([alice.endAsync(), bob.endAsync(), carol.endAsync()])
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

test('without SIGHUP: a user added with fleetmq user add connects within 2 s; a new password or a removal closes the user\'s sessions', async () => {
  const broker = await startFleetmq({ users: [BOB] })
  try {
    const port = broker.ports.mqtt
    assert.equal((await runCli(['user', 'add', 'carol', '--password-stdin', '--data-dir', broker.dir], {}, 'carol-secret-3\n')).code, 0)
    const addedAt = Date.now()
    const carol = await waitForLogin(port, { protocolVersion: 5, username: 'carol', password: 'carol-secret-3' })
    assert.ok(Date.now() - addedAt < 2_000, `carol connected ${Date.now() - addedAt} ms after the command`)

    const bob = await connect(port, { protocolVersion: 4, username: 'bob', password: BOB.password })
    const bobClosed = new Promise<void>((resolve) => bob.once('close', () => resolve()))
    const carolDisconnect = new Promise<number | undefined>((resolve) => carol.once('disconnect', (packet) => resolve(packet.reasonCode)))
    assert.equal((await runCli(['user', 'passwd', 'bob', '--password-stdin', '--data-dir', broker.dir], {}, 'bob-new-secret\n')).code, 0)
    await bobClosed
    assert.equal(await refusal(port, { protocolVersion: 5, username: 'bob', password: BOB.password }), 0x86)
    assert.ok(carol.connected, 'a change to bob closed carol\'s session')
    assert.equal((await runCli(['user', 'remove', 'carol', '--data-dir', broker.dir])).code, 0)
    // [MQTT-3.14.2-1] the 5.0 client is told why: 0x98 Administrative action.
    assert.equal(await carolDisconnect, 0x98)
    await broker.waitForLog((l) => /closing client .*: user carol was removed/.test(l.msg))
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

/** Retries a login until it is accepted (the store applies changes within a moment of the command). */
async function waitForLogin(port: number, options: IClientOptions, timeoutMs = 2_000): Promise<MqttClient> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await connect(port, options)
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

test('a broken user store at SIGHUP keeps the users loaded before', async () => {
  const broker = await startFleetmq({ users: [BOB] })
  try {
    const { writeFileSync } = await import('node:fs')
    writeFileSync(join(broker.dir, 'users.json'), '{ not json')
    broker.process.kill('SIGHUP')
    const error = await broker.waitForLog((l) => /could not reload the user store/.test(l.msg))
    assert.equal(error.level, 50)
    const bob = await connect(broker.ports.mqtt, { protocolVersion: 5, username: 'bob', password: BOB.password })
    await bob.endAsync()
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

test('the management API requires an admin user (HTTP Basic) except on health endpoints', async () => {
  const broker = await startFleetmq({ users: [ALICE, BOB] })
  try {
    const base = `http://127.0.0.1:${broker.mgmtPort}`
    const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })
    assert.equal((await fetch(`${base}/healthz`)).status, 200)
    const anonymous = await fetch(`${base}/api/v1/whoami`)
    assert.equal(anonymous.status, 401)
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic/)
    assert.equal((await fetch(`${base}/api/v1/whoami`, { headers: basic('alice', 'wrong-password') })).status, 401)
    assert.equal((await fetch(`${base}/api/v1/whoami`, { headers: basic('bob', BOB.password) })).status, 401, 'a user without the admin role')
    const admin = await fetch(`${base}/api/v1/whoami`, { headers: basic('alice', ALICE.password) })
    assert.equal(admin.status, 200)
    assert.deepEqual(await admin.json(), { username: 'alice', roles: ['admin'], kind: 'user', name: 'alice', role: 'admin' })
  } finally {
    await broker.stop()
  }
})

test('a verified client certificate authenticates without a password and its CN is the username (tls.useCnAsUsername)', async () => {
  const certs = makeCertificates(mkdtempSync(join(tmpdir(), 'fleetmq-auth-tls-')))
  const device = makeClientCertificate(certs, 'device-7')
  const broker = await startFleetmq({
    config: {
      listeners: [{
        type: 'mqtts', host: '127.0.0.1', port: 0,
        tls: { cert: certs.cert, key: certs.key, ca: certs.ca, requireClientCert: true, useCnAsUsername: true },
      }],
      // The CN is the username the ACL sees: only devices/<CN>/# may be subscribed to.
      acl: { default: 'deny', rules: [{ action: 'allow', permission: 'subscribe', topics: ['devices/%u/#'] }] },
    },
  })
  try {
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${broker.ports.mqtts}`, {
      protocolVersion: 5, reconnectPeriod: 0,
      ca: readFileSync(certs.ca), cert: readFileSync(device.cert), key: readFileSync(device.key),
      // A username and password the broker must ignore: the certificate decides.
      username: 'someone-else', password: 'not-checked',
    })
    assert.deepEqual(await subackCodes(client, ['devices/device-7/#', 'devices/device-8/#']), [1, 0x87])
    await client.endAsync()
  } finally {
    await broker.stop()
  }
})
