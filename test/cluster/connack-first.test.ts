import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, clusterOnRedis } from './nodes.js'
import { rawClient } from '../helpers/raw-client.js'

/*
 * [MQTT-3.2.0-1] "The first packet sent to the Client from the Server MUST be CONNACK." aedes
 * restores a resumed session's subscriptions before it writes the CONNACK, with Redis round trips
 * (the will) in between, so a message published meanwhile could go out first. MQTT.js then holds
 * that PUBLISH until it can send its PUBACK, which it queues until the CONNACK, which it reads
 * only after the PUBLISH: no CONNACK within its connectTimeout, again and again while messages
 * flow (seen as 4–23 s failovers in node-failure-roles.test.ts).
 */

const nodes = clusterOnRedis(1)
const RECONNECTIONS = 30

test('[MQTT-3.2.0-1] a resumed session is sent its CONNACK first while messages for it keep arriving', { timeout: 120_000 }, async (t) => {
  const port = nodes[0].ports.mqtt
  const resume = { clientId: 'connack-first', clean: false, properties: { sessionExpiryInterval: 600 } }
  const first = await rawClient(port, 5)
  await first.connect(resume)
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'first/#', qos: 1 }] })
  await first.waitFor('suback')
  first.destroy()

  const pub = await connect(nodes[0], { protocolVersion: 5 })
  t.after(() => pub.end(true))
  let stop = false
  t.after(() => { stop = true })
  const publishing = (async () => {
    for (let seq = 0; !stop; seq++) {
      // 20 in flight: a steady flow, never a backlog that would be the first thing sent anyway.
      await Promise.all(Array.from({ length: 20 }, (_, i) => pub.publishAsync('first/seq', String(seq * 20 + i), { qos: 1 })))
    }
  })()

  const firstPackets: string[] = []
  for (let i = 0; i < RECONNECTIONS; i++) {
    const sub = await rawClient(port, 5)
    sub.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, keepalive: 60, ...resume })
    await sub.waitForPacket(() => true, 10_000)
    firstPackets.push(sub.received[0].cmd)
    sub.destroy()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  stop = true
  await publishing
  const wrong = firstPackets.filter((cmd) => cmd !== 'connack').length
  t.diagnostic(`first packets: ${firstPackets.join(' ')}`)
  assert.equal(wrong, 0, `${wrong} of ${RECONNECTIONS} resumptions got another packet before the CONNACK`)
})
