import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { collect, nextEvent, clusterOnRedis, numberedPublisher, waitUntil } from './nodes.js'

/*
 * kill -9 of the node two persistent-session clients use while they exchange QoS 1 messages: both
 * reconnect to another node (MQTT.js rotates through its server list) and every message the
 * publisher got a PUBACK for is delivered at least once.
 */

const nodes = clusterOnRedis(3)

test('kill -9 of a node under QoS 1 persistent traffic: no PUBACKed message is lost', async (t) => {
  // The victim first: both clients start on it and fail over to the others.
  const servers = nodes.map((n) => ({ host: '127.0.0.1', port: n.ports.mqtt }))
  const session = (clientId: string) => mqtt.connect({ servers, protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 300, connectTimeout: 3_000 })
  const sub = session('failover-sub')
  const got = collect(sub)
  await nextEvent(sub, 'connect')
  await sub.subscribeAsync('failover/#', { qos: 1 })
  const pub = session('failover-pub')
  t.after(() => { sub.end(true); pub.end(true) })
  await nextEvent(pub, 'connect')

  const publisher = numberedPublisher(pub, 'failover/seq', 10)
  t.after(() => publisher.stop())
  const { acked } = publisher

  await waitUntil('traffic flowing', () => acked.size >= 200)
  const killedAt = Date.now()
  await nodes[0].stop('SIGKILL')
  const ackedAtKill = acked.size
  await waitUntil('both clients reconnected elsewhere and traffic acknowledged again', () => sub.connected && pub.connected && acked.size >= ackedAtKill + 200, 30_000)
  const resumedAfter = Date.now() - killedAt
  await publisher.stop()
  const sent = publisher.sent()
  await waitUntil('every acknowledged message delivered', () => [...acked].every((seq) => got.some((m) => Number(m.payload) === seq)), 30_000)
    .catch(() => undefined)
  const delivered = new Set(got.map((m) => Number(m.payload)))
  const lost = [...acked].filter((seq) => !delivered.has(seq))
  const duplicates = got.length - delivered.size
  t.diagnostic(`sent ${sent}, PUBACKed ${acked.size}, delivered ${delivered.size} distinct (${duplicates} duplicates), lost ${lost.length}; clients back and acknowledged ${resumedAfter} ms after the kill`)
  assert.deepEqual(lost, [], 'no PUBACKed message lost')
  await Promise.all([sub.endAsync(), pub.endAsync()])
})
