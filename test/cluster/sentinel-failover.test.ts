import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import type { RunningFleetmq } from '../helpers/fleetmq.js'
import { startSentinelGroup, type SentinelGroup } from '../helpers/redis.js'
import { collect, connectCollecting, nextEvent, startNodes, stopAll, waitUntil } from './nodes.js'

/*
 * kill -9 of the Redis primary under Sentinel during QoS 1 traffic between two nodes. No node
 * may crash (plain aedes + mqemitter-redis died of an unhandled Redis error), service must resume within
 * 10 s of the new primary, and the test reports how many PUBACKed messages asynchronous
 * replication lost. The servers run with `min-replicas-to-write 1` / `min-replicas-max-lag 10`:
 * a primary that has lost every replica for 10 s refuses writes rather than accept writes that
 * no replica holds — the cost is that writes stop when no replica is reachable.
 */

let group: SentinelGroup
let nodes: RunningFleetmq[]

before(async () => {
  group = await startSentinelGroup({ replicas: 2, serverArgs: ['--min-replicas-to-write', '1', '--min-replicas-max-lag', '10'] })
  const env = { FLEETMQ_CLUSTER__REDIS__SENTINELS: JSON.stringify(group.sentinelAddresses), FLEETMQ_CLUSTER__REDIS__NAME: group.name }
  nodes = await startNodes(2, { env })
})

after(async () => {
  await stopAll(nodes)
  await group.stop()
})

test('kill -9 of the Redis primary during traffic: no node crashes, service resumes within 10 s of the new primary', async (t) => {
  const [a, b] = nodes
  const session = { protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 600 }, reconnectPeriod: 300 }
  const sub = mqtt.connect(`mqtt://127.0.0.1:${a.ports.mqtt}`, { ...session, clientId: 'sentinel-sub' })
  const got = collect(sub)
  await nextEvent(sub, 'connect')
  await sub.subscribeAsync('sentinel/#', { qos: 1 })
  const pub = mqtt.connect(`mqtt://127.0.0.1:${b.ports.mqtt}`, { ...session, clientId: 'sentinel-pub' })
  t.after(() => { sub.end(true); pub.end(true) })
  await nextEvent(pub, 'connect')

  const acked = new Map<number, number>()
  let sent = 0
  let stop = false
  const publishing = (async () => {
    while (!stop) {
      const seq = sent++
      pub.publishAsync('sentinel/seq', String(seq), { qos: 1 }).then(() => acked.set(seq, Date.now()), () => undefined)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })()
  await waitUntil('traffic flowing', () => acked.size >= 100)

  const primaryPort = await group.primaryPort()
  const oldPrimary = group.servers.find((s) => s.port === primaryPort) ?? assert.fail('no server is the primary')
  const killedAt = Date.now()
  await oldPrimary.kill9()
  const newPrimaryAt = await waitUntil('a new primary', async () => ((await group.primaryPort()) !== oldPrimary.port ? Date.now() : undefined), 30_000)
  const resumedAt = await waitUntil('an acknowledgement for a message sent after the new primary', () => {
    const late = [...acked].find(([, at]) => at > newPrimaryAt)
    return late ? late[1] : undefined
  }, 20_000)
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  stop = true
  await publishing

  // Both nodes are still running, and both report ready again.
  for (const node of nodes) {
    assert.equal(node.process.exitCode, null, 'node alive')
    await waitUntil('ready again', async () => {
      const res = await fetch(`http://127.0.0.1:${node.mgmtPort}/readyz`)
      if (res.status !== 200) throw new Error(await res.text())
      return true
    })
  }
  // Whatever pub/sub lost during the switch waits in the session: reconnect to collect it.
  await waitUntil('deliveries settle', () => [...acked.keys()].every((seq) => got.some((m) => Number(m.payload) === seq)), 5_000).catch(() => undefined)
  sub.end(true)
  const again = await connectCollecting(b, { ...session, clientId: 'sentinel-sub', resubscribe: false })
  t.after(() => { again.client.end(true) })
  await waitUntil('queued messages drained', () => [...acked.keys()].every((seq) => got.some((m) => Number(m.payload) === seq) || again.got.some((m) => Number(m.payload) === seq)), 10_000).catch(() => undefined)
  const delivered = new Set([...got, ...again.got].map((m) => Number(m.payload)))
  const lost = [...acked.keys()].filter((seq) => !delivered.has(seq))
  const outages = a.logs.filter((l) => /Redis unreachable/.test(l.msg)).length + b.logs.filter((l) => /Redis unreachable/.test(l.msg)).length
  t.diagnostic(`new primary ${newPrimaryAt - killedAt} ms after the kill; first acknowledged publish ${resumedAt - newPrimaryAt} ms after it; sent ${sent}, PUBACKed ${acked.size}, lost ${lost.length} acknowledged messages; outages logged ${outages}`)
  assert.ok(resumedAt - newPrimaryAt <= 10_000, `service resumed ${resumedAt - newPrimaryAt} ms after the new primary`)
  await Promise.all([again.client.endAsync(), pub.endAsync()])
})
