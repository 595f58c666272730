import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { collect, connect, clusterOnRedis, waitUntil } from './nodes.js'

/*
 * Shared subscriptions across the cluster [MQTT-4.8.2]: each message reaches exactly one member
 * of each group whichever nodes the members are on, and a member that disconnects has its
 * unacknowledged QoS 1 messages sent to another member, on another node.
 */

const nodes = clusterOnRedis(3)

/** Membership changes travel over Redis pub/sub to the other nodes' caches. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 700))

test('one group with a member on each of 3 nodes gets every QoS 1 message exactly once; a second group gets all', { timeout: 50_000 }, async () => {
  const members = await Promise.all(nodes.map((node, i) => connect(node, { protocolVersion: i === 1 ? 4 : 5, clientId: `w${i}` })))
  const other = await connect(nodes[1], { protocolVersion: 5, clientId: 'other' })
  const pub = await connect(nodes[0], { protocolVersion: 5, clientId: 'pub' })
  try {
    const got = members.map(collect)
    for (const m of members) await m.subscribeAsync('$share/g1/jobs/#', { qos: 1 })
    await other.subscribeAsync('$share/g2/jobs/#', { qos: 1 })
    const otherGot = collect(other)
    await settle()
    const count = 60
    for (let i = 0; i < count; i++) await pub.publishAsync(`jobs/${i % 5}`, String(i), { qos: 1 })
    await waitUntil('the second group got every message', () => otherGot.length >= count, 20_000)
    await waitUntil('the first group got every message', () => got.flat().length >= count, 20_000)
    await settle() // a duplicate would arrive now
    const all = got.flat().map((m) => Number(m.payload)).sort((a, b) => a - b)
    assert.deepEqual(all, Array.from({ length: count }, (_, i) => i), 'each message exactly once across the group')
    assert.ok(got.filter((g) => g.length > 0).length >= 2, `spread over the nodes: ${got.map((g) => g.length).join('/')}`)
    assert.deepEqual(otherGot.map((m) => Number(m.payload)), Array.from({ length: count }, (_, i) => i))
  } finally {
    await Promise.all([...members, other, pub].map((c) => c.endAsync()))
  }
})

test('a member that drops with unacknowledged QoS 1 messages has them delivered to a member on another node', { timeout: 50_000 }, async () => {
  // A bare client that never PUBACKs: its messages stay unacknowledged.
  const slow = await rawConnect(nodes[0].ports.mqtt, { clientId: 'slow' }, 5)
  slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$share/g3/tasks/#', qos: 1 }] })
  await slow.waitFor((p) => p.cmd === 'suback')
  const fast = await connect(nodes[2], { protocolVersion: 5, clientId: 'fast' })
  const pub = await connect(nodes[1], { protocolVersion: 4, clientId: 'pub3' })
  try {
    const got = collect(fast)
    await fast.subscribeAsync('$share/g3/tasks/#', { qos: 1 })
    await settle()
    const count = 30
    for (let i = 0; i < count; i++) await pub.publishAsync('tasks/x', String(i), { qos: 1 })
    const held = () => slow.packets.filter((p) => p.cmd === 'publish').length
    await waitUntil('both members got some', () => held() > 0 && held() + got.length >= count, 20_000)
    assert.ok(got.length < count, 'the slow member held some messages')
    slow.destroy()
    await waitUntil('the held messages reached the other member', () => new Set(got.map((m) => m.payload)).size >= count, 20_000)
    assert.deepEqual([...new Set(got.map((m) => Number(m.payload)))].sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i))
  } finally {
    slow.destroy()
    await Promise.all([fast.endAsync(), pub.endAsync()])
  }
})
