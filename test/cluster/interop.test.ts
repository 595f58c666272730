import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { runPaho } from '../helpers/paho.js'
import { runProgram as run } from '../helpers/program.js'
import { clusterWithRedis } from './nodes.js'

/*
 * The interoperability defects of test/broker/interop.test.ts on a cluster of two nodes on one
 * Redis (sessions, queued messages and wills in aedes-persistence-redis, messages across nodes on
 * the fan-out), with Eclipse Paho for Python and mosquitto's clients.
 */

const { nodes } = clusterWithRedis(2)

test('a session resumed on the other node with Clean Start 0 and no Session Expiry gets its queued messages, with the remaining Message Expiry', async () => {
  const [a, b] = nodes
  const topic = `interop/cluster/${process.pid}/resume`
  const clientId = `resume-${process.pid}`
  const first = await runPaho({ port: a.ports.mqtt, clientId, connectProperties: { SessionExpiryInterval: 99_999 }, subscribe: [[topic, 2]], hold: 0.1 }).finished
  assert.deepEqual(first.find((e) => e.event === 'suback')?.granted, [2])
  for (const [qos, extra] of [['1', []], ['2', ['-D', 'publish', 'message-expiry-interval', '100']]] as const) {
    const pub = await run('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(b.ports.mqtt), '-t', topic, '-q', qos, '-m', `q${qos}`, ...extra])
    assert.equal(pub.code, 0, pub.stderr)
  }
  await sleep(2_100)
  const resumed = await runPaho({ port: b.ports.mqtt, clientId, cleanStart: false, expect: 2, timeout: 20 }).finished
  assert.equal(resumed.find((e) => e.event === 'connack')?.sessionPresent, true, JSON.stringify(resumed))
  const messages = resumed.filter((e) => e.event === 'message')
  assert.deepEqual(messages.map((m) => [m.payload, m.qos]), [['q1', 1], ['q2', 2]], JSON.stringify(resumed))
  const left = messages[1].properties?.MessageExpiryInterval as number
  assert.ok(left >= 90 && left <= 98, `the remaining lifetime after 2 s of 100 s, got ${left}`)
})

test('a will published on one node reaches a Paho subscriber on the other without Will Delay Interval', async () => {
  const [a, b] = nodes
  const topic = `interop/cluster/${process.pid}/will`
  const watcher = runPaho({ port: a.ports.mqtt, clientId: `will-watch-${process.pid}`, subscribe: [[topic, 1]], expect: 1, timeout: 20 })
  await watcher.waitFor((e) => e.event === 'subscribed', 20_000)
  // The subscription reaches node B's route table through Redis.
  await sleep(1_000)
  const dying = await runPaho({
    port: b.ports.mqtt,
    clientId: `will-sender-${process.pid}`,
    will: { topic, payload: 'gone', qos: 1, properties: { WillDelayInterval: 0, ContentType: 'text/plain', UserProperty: [['k', 'v']] } },
    drop: true,
  }).finished
  assert.equal(dying.find((e) => e.event === 'connack')?.reasonCode, 0)
  const events = await watcher.finished
  const will = events.find((e) => e.event === 'message')
  assert.ok(will, `Paho got no will: ${JSON.stringify(events)}`)
  assert.deepEqual([will.payload, will.properties?.ContentType, will.properties?.UserProperty], ['gone', 'text/plain', [['k', 'v']]])
  assert.equal(will.properties?.WillDelayInterval, undefined)
})
