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

/** Long enough for a duplicate delivery to show up. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 700))

test('one group with a member on each of 3 nodes gets every QoS 1 message exactly once; a second group gets all', { timeout: 50_000 }, async () => {
  const members = await Promise.all(nodes.map((node, i) => connect(node, { protocolVersion: i === 1 ? 4 : 5, clientId: `w${i}` })))
  const other = await connect(nodes[1], { protocolVersion: 5, clientId: 'other' })
  const pub = await connect(nodes[0], { protocolVersion: 5, clientId: 'pub' })
  try {
    const got = members.map(collect)
    // All at once, as devices do: each node's view must still end up with every member.
    await Promise.all(members.map((m) => m.subscribeAsync('$share/g1/jobs/#', { qos: 1 })))
    await other.subscribeAsync('$share/g2/jobs/#', { qos: 1 })
    // No wait: SUBACK comes once every node has the new member.
    const otherGot = collect(other)
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

test('members joining many groups on 3 nodes at nearly the same moment: every node ends with the same members', { timeout: 60_000 }, async () => {
  // Joins a few milliseconds apart race each node's own membership write against the reloads the
  // other nodes' announcements trigger; a node whose view lost its own member would never
  // deliver that member's share of the messages.
  const groups = 12
  const members = await Promise.all(nodes.map((node, i) => connect(node, { protocolVersion: 5, clientId: `j${i}` })))
  const pub = await connect(nodes[1], { protocolVersion: 5, clientId: 'jpub' })
  try {
    const got = members.map(collect)
    await Promise.all(members.flatMap((m, i) => Array.from({ length: groups }, (_, g) =>
      new Promise((resolve) => setTimeout(resolve, ((g * 7 + i * 3) % 5)))
        .then(() => m.subscribeAsync(`$share/race${g}/race/t`, { qos: 1 })))))
    const count = 20
    for (let i = 0; i < count; i++) await pub.publishAsync('race/t', String(i), { qos: 1 })
    await waitUntil('every group got every message', () => got.flat().length >= count * groups, 20_000)
      .catch(() => assert.fail(`the groups got ${got.flat().length} of ${count * groups} messages: some node's view of a group lacks a member`))
    await settle()
    assert.equal(got.flat().length, count * groups, 'each message once per group')
  } finally {
    await Promise.all([...members, pub].map((c) => c.endAsync()))
  }
})
