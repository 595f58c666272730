import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { pubackCode, subackCodes } from '../helpers/mqtt-client.js'

/*
 * The ACL a node has when its config says nothing about it: `acl.default: deny`, and the built-in
 * rules. A device (any user without the admin role) reaches `devices/<its client id>/#` and
 * `users/<its username>/#`; an admin every topic; nobody else's device topics, nor `#`.
 */
const DEVICE = { username: 'sensor-1', password: 'sensor-1-secret' }
const OTHER = { username: 'sensor-2', password: 'sensor-2-secret' }
const ADMIN = { username: 'ops', password: 'ops-secret-123', admin: true }

let broker: RunningFleetmq
before(async () => {
  broker = await startFleetmq({ users: [DEVICE, OTHER, ADMIN] })
})
after(async () => {
  await broker.stop()
})

const connect = (user: { username: string; password: string }, clientId: string, options: IClientOptions = {}): Promise<MqttClient> =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, {
    reconnectPeriod: 0, protocolVersion: 5, clientId, username: user.username, password: user.password, ...options,
  })

/** Resolves with the first message on `topic` (or rejects after 5 s). */
function nextMessage(client: MqttClient, topic: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within 5 s`)), 5_000)
    client.on('message', (t, payload) => {
      if (t !== topic) return
      clearTimeout(timer)
      resolve(payload.toString())
    })
  })
}

test('with no acl in the config, a device may not read # or another device\'s topics, nor publish there (0x87)', async () => {
  const device = await connect(DEVICE, 'dev-1')
  assert.deepEqual(await subackCodes(device, ['#', 'devices/#', 'devices/+/up', 'devices/dev-2/#', 'users/sensor-2/#']), [0x87, 0x87, 0x87, 0x87, 0x87])
  assert.equal(await pubackCode(device, 'devices/dev-2/cmd', 'not mine'), 0x87)
  assert.equal(await pubackCode(device, 'users/sensor-2/inbox', 'not mine'), 0x87)
  assert.equal(await pubackCode(device, 'anything', 'no rule'), 0x87)
  await device.endAsync()
})

test('a device publishes and subscribes below devices/<its client id>/ and users/<its username>/', async () => {
  const device = await connect(DEVICE, 'dev-1')
  assert.deepEqual(await subackCodes(device, ['devices/dev-1/#', 'users/sensor-1/+/inbox', '$share/g/devices/dev-1/cmd']), [1, 1, 1])
  const received = nextMessage(device, 'users/sensor-1/a/inbox')
  assert.equal(await pubackCode(device, 'devices/dev-1/up', '21.5'), 0)
  assert.equal(await pubackCode(device, 'users/sensor-1/a/inbox', 'hello'), 0)
  assert.equal(await received, 'hello')
  await device.endAsync()
})

test('an admin reads # (every device\'s messages) and $SYS/#, and publishes to any device', async () => {
  const admin = await connect(ADMIN, 'ops-console')
  assert.deepEqual(await subackCodes(admin, ['#', '$SYS/#']), [1, 1])
  const device = await connect(OTHER, 'dev-2')
  await subackCodes(device, ['devices/dev-2/cmd'])
  const up = nextMessage(admin, 'devices/dev-2/up')
  const command = nextMessage(device, 'devices/dev-2/cmd')
  assert.equal(await pubackCode(device, 'devices/dev-2/up', 'reading'), 0)
  assert.equal(await up, 'reading')
  assert.equal(await pubackCode(admin, 'devices/dev-2/cmd', 'reboot'), 0)
  assert.equal(await command, 'reboot')
  await Promise.all([admin.endAsync(), device.endAsync()])
})

test('a client id or username with +, # or / does not widen the template: client id a/# gets nothing below devices/a/', async () => {
  for (const clientId of ['a/#', '+', 'a/b', '#']) {
    const device = await connect(DEVICE, clientId)
    assert.deepEqual(await subackCodes(device, ['devices/a/#', 'devices/+/#', 'devices/#', 'devices/a/b/#']), [0x87, 0x87, 0x87, 0x87], clientId)
    assert.equal(await pubackCode(device, 'devices/a/b/x', 'widened'), 0x87, clientId)
    assert.equal(await pubackCode(device, 'devices/a/x', 'widened'), 0x87, clientId)
    // Its user's topics still work: only the template with the unsafe value is refused.
    assert.equal(await pubackCode(device, 'users/sensor-1/x', 'fine'), 0, clientId)
    await device.endAsync()
  }
})

test('mosquitto_sub as a device: # is refused (SUBACK 135 for 5.0, 128 for 3.1.1)', async () => {
  const run = (version: string): Promise<string> => new Promise((resolve) => {
    execFile('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.ports.mqtt), '-V', version, '-i', 'dev-1', '-u', DEVICE.username, '-P', DEVICE.password,
      '-t', '#', '-q', '1', '-d', '-C', '1', '-W', '3'], { timeout: 20_000 }, (_err, stdout, stderr) => resolve(stdout + stderr))
  })
  assert.match(await run('mqttv5'), /Subscribed \(mid: \d+\): 135/)
  assert.match(await run('mqttv311'), /Subscribed \(mid: \d+\): 128/)
})

test('allowAnonymous (development mode): clients without credentials may use every topic but $SYS, and the start says so', async () => {
  const dev = await startFleetmq({ config: { allowAnonymous: true } })
  try {
    assert.ok(dev.logs.some((l) => l.level === 40 && /allowAnonymous is on: .*every topic/.test(l.msg)))
    const anonymous = await mqtt.connectAsync(`mqtt://127.0.0.1:${dev.ports.mqtt}`, { reconnectPeriod: 0, protocolVersion: 5 })
    assert.deepEqual(await subackCodes(anonymous, ['#', '$SYS/#']), [1, 0x87])
    assert.equal(await pubackCode(anonymous, 'devices/any/thing', 'dev'), 0)
    await anonymous.endAsync()
  } finally {
    await dev.stop()
  }
})
