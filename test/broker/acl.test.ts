import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { subackCodes, pubackCode } from '../helpers/mqtt-client.js'

// Alice and bob are devices: an admin may use every topic no configured rule names (acl-defaults.test.ts).
const ALICE = { username: 'alice', password: 'alice-secret-1' }
const BOB = { username: 'bob', password: 'bob-secret-22' }
const OPS = { username: 'ops', password: 'ops-secret-333', admin: true }

/*
 * One broker for the file, with `acl.default: deny` and rules that exercise %u, %c, users,
 * addresses and first-match-wins. Every client is on 127.0.0.1.
 */
const ACL = {
  default: 'deny',
  rules: [
    { action: 'deny', permission: 'publish', topics: ['sensors/%u/locked'] },
    { action: 'allow', permission: 'all', topics: ['sensors/%u/#'] },
    { action: 'allow', permission: 'publish', topics: ['devices/%c/up'] },
    { action: 'allow', permission: 'publish', addresses: ['127.0.0.0/8', '::1'], topics: ['local/#'] },
    { action: 'allow', permission: 'publish', addresses: ['192.0.2.0/24'], topics: ['remote/#'] },
    { action: 'allow', permission: 'subscribe', users: ['bob'], topics: ['devices/+/up', 'local/#', 'remote/#', 'sensors/#'] },
  ],
}

let broker: RunningFleetmq
before(async () => {
  broker = await startFleetmq({ users: [ALICE, BOB, OPS], config: { acl: ACL } })
})
after(async () => {
  await broker.stop()
})

const connect = (user: { username: string; password: string }, options: IClientOptions = {}): Promise<MqttClient> =>
  mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, {
    reconnectPeriod: 0, protocolVersion: 5, username: user.username, password: user.password, ...options,
  })

/** Collects the messages a subscriber receives, in order. */
function inbox(client: MqttClient): { messages: string[]; next(): Promise<string> } {
  const messages: string[] = []
  const waiting = new Map<number, (m: string) => void>()
  let cursor = 0
  client.on('message', (topic, payload) => {
    messages.push(`${topic} ${payload.toString()}`)
    const index = messages.length - 1
    waiting.get(index)?.(messages[index])
    waiting.delete(index)
  })
  return {
    messages,
    next: () => new Promise((resolve) => {
      const index = cursor++
      if (index < messages.length) resolve(messages[index])
      else waiting.set(index, resolve)
    }),
  }
}

function mosquittoSub(version: 'mqttv311' | 'mqttv5', topic: string): Promise<string> {
  return new Promise((resolve) => {
    // -d prints "Subscribed (mid: 1): <code>" for the SUBACK; -W ends the client after 5 s at most.
    execFile('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.ports.mqtt), '-V', version, '-u', BOB.username, '-P', BOB.password,
      '-t', topic, '-q', '1', '-d', '-C', '1', '-W', '5'], { timeout: 20_000 }, (_err, stdout, stderr) => resolve(stdout + stderr))
  })
}

test('%u: a user subscribes below its own name only; a wider filter is refused with 0x87 (5.0) and 0x80 (3.1.1)', async () => {
  const v5 = await connect(ALICE, { clientId: 'alice-v5' })
  const v311 = await connect(ALICE, { clientId: 'alice-v311', protocolVersion: 4 })
  // [MQTT-3.9.3] one return code per filter, in order; a refusal does not affect the others.
  assert.deepEqual(await subackCodes(v5, ['sensors/alice/+/temp', 'sensors/#', 'sensors/bob/#']), [1, 0x87, 0x87])
  assert.deepEqual(await subackCodes(v311, ['sensors/alice/#', 'sensors/+/temp']), [1, 0x80])
  await Promise.all([v5.endAsync(), v311.endAsync()])
})

test('mosquitto_sub sees SUBACK 0x80 (3.1.1) and 0x87 (5.0) for a refused filter', async () => {
  assert.match(await mosquittoSub('mqttv311', 'devices/#'), /Subscribed \(mid: \d+\): 128/)
  assert.match(await mosquittoSub('mqttv5', 'devices/#'), /Subscribed \(mid: \d+\): 135/)
})

test('%c and first match wins: a denied 5.0 publish gets PUBACK / PUBREC 0x87 and reaches no subscriber', async () => {
  const bob = await connect(BOB, { clientId: 'bob-watch' })
  const received = inbox(bob)
  assert.deepEqual(await subackCodes(bob, ['devices/+/up', 'sensors/#']), [1, 1])
  const alice = await connect(ALICE, { clientId: 'dev-1' })
  assert.equal(await pubackCode(alice, 'devices/dev-2/up', 'not mine'), 0x87)
  assert.equal(await pubackCode(alice, 'sensors/alice/locked', 'denied by the earlier rule'), 0x87)
  assert.equal(await pubackCode(alice, 'devices/dev-2/up', 'not mine at QoS 2', 2), 0x87)
  assert.ok(alice.connected, 'a 5.0 client stays connected after a refused publish')
  assert.equal(await pubackCode(alice, 'devices/dev-1/up', 'mine'), 0)
  assert.equal(await pubackCode(alice, 'sensors/alice/temp', '21.5'), 0)
  // Same publisher, same order: had a refused message been delivered it would have come first.
  assert.equal(await received.next(), 'devices/dev-1/up mine')
  assert.equal(await received.next(), 'sensors/alice/temp 21.5')
  await Promise.all([alice.endAsync(), bob.endAsync()])
  assert.deepEqual(received.messages, ['devices/dev-1/up mine', 'sensors/alice/temp 21.5'])
})

test('address rules match the client address (127.0.0.1 here) against CIDR blocks', async () => {
  const bob = await connect(BOB, { clientId: 'bob-addr' })
  const received = inbox(bob)
  await subackCodes(bob, ['local/#', 'remote/#'])
  const alice = await connect(ALICE, { clientId: 'alice-addr' })
  assert.equal(await pubackCode(alice, 'remote/x', 'from the wrong network'), 0x87)
  assert.equal(await pubackCode(alice, 'local/x', 'from loopback'), 0)
  assert.equal(await received.next(), 'local/x from loopback')
  await Promise.all([alice.endAsync(), bob.endAsync()])
})

test('a denied 3.1.1 publish closes the connection [MQTT-3.3.5-2] and is not delivered', async () => {
  const bob = await connect(BOB, { clientId: 'bob-311' })
  const received = inbox(bob)
  await subackCodes(bob, ['devices/+/up'])
  const alice = await connect(ALICE, { clientId: 'dev-9', protocolVersion: 4 })
  const closed = new Promise<void>((resolve) => alice.once('close', () => resolve()))
  alice.publish('devices/dev-2/up', 'not mine', { qos: 1 })
  await closed
  alice.end(true)
  // Another allowed message from another client arrives; the refused one never did.
  const carrier = await connect(ALICE, { clientId: 'dev-3' })
  assert.equal(await pubackCode(carrier, 'devices/dev-3/up', 'ok'), 0)
  assert.equal(await received.next(), 'devices/dev-3/up ok')
  assert.deepEqual(received.messages, ['devices/dev-3/up ok'])
  await Promise.all([carrier.endAsync(), bob.endAsync()])
})

test('$SYS/# is for admins: ops (admin) may subscribe, bob may not, and no client may publish there', async () => {
  const ops = await connect(OPS, { clientId: 'ops-sys' })
  const bob = await connect(BOB, { clientId: 'bob-sys' })
  assert.deepEqual(await subackCodes(ops, ['$SYS/#']), [1])
  assert.deepEqual(await subackCodes(bob, ['$SYS/#']), [0x87])
  assert.equal(await pubackCode(ops, '$SYS/broker/uptime', 'forged'), 0x87)
  await Promise.all([ops.endAsync(), bob.endAsync()])
})
