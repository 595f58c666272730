import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt, { type MqttClient } from 'mqtt'
import { collect, nextEvent, clusterOnRedis, numberedPublisher, waitUntil } from './nodes.js'

/*
 * The publisher and the subscriber on different nodes, as behind a load balancer: kill -9 first
 * the publisher's node, then the subscriber's, during a QoS 1 flow. Each time the clients are back
 * on a surviving node within 10 s, and every message the publisher got a PUBACK for is delivered
 * at least once (duplicates are counted and allowed: QoS 1 is at least once).
 */

const nodes = clusterOnRedis(3)
const BACK_WITHIN_MS = 10_000

/** The port MQTT.js is connected to (it rotates `servers` on reconnect). */
const portOf = (client: MqttClient): number | undefined => (client.options as { port?: number }).port

test('kill -9 of the publishers\' node, then of the subscribers\' node, during QoS 1: back within 10 s, nothing acknowledged lost', { timeout: 120_000 }, async (t) => {
  const server = (i: number) => ({ host: '127.0.0.1', port: nodes[i].ports.mqtt })
  const session = (clientId: string, order: number[]) => mqtt.connect({
    servers: order.map(server), protocolVersion: 5, clientId, clean: false,
    properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 250, connectTimeout: 3_000,
  })
  // The publisher starts on node 0, the subscriber on node 1; both fall back to node 2.
  const sub = session('roles-sub', [1, 2, 0])
  const got = collect(sub)
  await nextEvent(sub, 'connect')
  await sub.subscribeAsync('roles/#', { qos: 1 })
  const pub = session('roles-pub', [0, 2, 1])
  t.after(() => { sub.end(true); pub.end(true) })
  await nextEvent(pub, 'connect')
  assert.equal(portOf(pub), nodes[0].ports.mqtt)
  assert.equal(portOf(sub), nodes[1].ports.mqtt)

  const publisher = numberedPublisher(pub, 'roles/seq', 5)
  const { acked } = publisher

  const results: string[] = []
  const killedAtSeq: number[] = []
  // However the test ends, the publishing loop ends with it (or the process would never exit).
  t.after(() => publisher.stop())
  for (const [victim, role] of [[0, 'publisher'], [1, 'subscriber']] as const) {
    await waitUntil(`traffic flowing before the ${role}'s node dies`, () => acked.size >= 200 + results.length * 400)
    const before = acked.size
    const killedAt = Date.now()
    killedAtSeq.push(publisher.sent())
    await nodes[victim].stop('SIGKILL')
    const reconnected = waitUntil(`the ${role} reconnected`, () => pub.connected && sub.connected && portOf(pub) !== nodes[victim].ports.mqtt && portOf(sub) !== nodes[victim].ports.mqtt, 30_000).then(() => Date.now() - killedAt)
    // Back: both clients connected to a live node and new messages both acknowledged and delivered.
    await waitUntil(`the ${role} back on another node`, () =>
      pub.connected && sub.connected && portOf(pub) !== nodes[victim].ports.mqtt && portOf(sub) !== nodes[victim].ports.mqtt &&
      acked.size >= before + 50 && got.some((m) => Number(m.payload) >= publisher.sent() - 100), 30_000)
    const backMs = Date.now() - killedAt
    results.push(`${role}'s node killed: reconnected in ${await reconnected} ms, served in ${backMs} ms`)
    assert.ok(backMs <= BACK_WITHIN_MS, `after the ${role}'s node died the clients took ${backMs} ms to be served again (target ${BACK_WITHIN_MS} ms; ${results.at(-1)})`)
  }
  await publisher.stop()
  const sent = publisher.sent()
  await waitUntil('every acknowledged message delivered', () => {
    const seen = new Set(got.map((m) => Number(m.payload)))
    return [...acked].every((seq) => seen.has(seq))
  }, 30_000).catch(() => undefined)
  const delivered = new Set(got.map((m) => Number(m.payload)))
  const lost = [...acked].filter((seq) => !delivered.has(seq)).sort((a, b) => a - b)
  if (lost.length) t.diagnostic(`lost: ${lost.slice(0, 20).join(' ')}; kills at seq ${killedAtSeq.join(', ')}`)
  t.diagnostic(`${results.join('; ')}; sent ${sent}, PUBACKed ${acked.size}, delivered ${delivered.size} distinct (${got.length - delivered.size} duplicates), lost ${lost.length}`)
  assert.deepEqual(lost, [], 'no PUBACKed message lost')
  await Promise.all([sub.endAsync(), pub.endAsync()])
})
