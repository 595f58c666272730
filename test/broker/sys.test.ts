import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { startFleetmq } from '../helpers/fleetmq.js'
import { METRICS_ADMIN } from '../helpers/metrics.js'
import { sysMessages, topicLevel } from '../../broker/sys/index.js'

/*
 * `$SYS` statistics under `$SYS/broker/<nodeId>/`, every sysInterval seconds, not retained, and one
 * JSON message per client connect and disconnect with the real client address.
 */

test('topicLevel keeps a client id one topic level', () => {
  assert.equal(topicLevel('sensor-1'), 'sensor-1')
  assert.equal(topicLevel('a/b+c#d%'), 'a%2Fb%2Bc%23d%25')
})

test('sysMessages uses mosquitto names and omits an unknown retained count', () => {
  const stats = { clientsConnected: 2, clientsTotal: 5, messagesReceived: 10, messagesSent: 9, bytesReceived: 100, bytesSent: 90, subscriptions: 3, messagesDropped: 1, retained: undefined }
  const messages = new Map(sysMessages(stats, 12.7, '1.2.3'))
  assert.equal(messages.get('clients/connected'), '2')
  assert.equal(messages.get('uptime'), '12 seconds')
  assert.equal(messages.get('version'), 'fleetmq version 1.2.3')
  assert.equal(messages.get('publish/messages/dropped'), '1')
  assert.equal(messages.has('retained messages/count'), false)
})

test('a subscriber to $SYS/broker/# gets the statistics every interval and each client connect and disconnect', { timeout: 60_000 }, async () => {
  const broker = await startFleetmq({ users: [METRICS_ADMIN], config: { allowAnonymous: true, sysInterval: 1, listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }] } })
  try {
    const url = `mqtt://127.0.0.1:${broker.ports.mqtt}`
    // $SYS is for admins (the ACL's built-in rule).
    const watcher = await mqtt.connectAsync(url, { protocolVersion: 5, clientId: 'watcher', username: METRICS_ADMIN.username, password: METRICS_ADMIN.password, reconnectPeriod: 0 })
    const seen: { topic: string; payload: string; retain: boolean }[] = []
    watcher.on('message', (topic, payload, packet) => seen.push({ topic, payload: payload.toString(), retain: packet.retain }))
    await watcher.subscribeAsync('$SYS/broker/#', { qos: 0 })

    const waitFor = async (match: (m: { topic: string; payload: string }) => boolean, what: string): Promise<{ topic: string; payload: string; retain: boolean }> => {
      const deadline = Date.now() + 15_000
      for (;;) {
        const found = seen.find(match)
        if (found) return found
        if (Date.now() > deadline) throw new Error(`no ${what}; seen: ${[...new Set(seen.map((m) => m.topic))].join(', ')}`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }

    const device = await mqtt.connectAsync(url, { protocolVersion: 4, clientId: 'device/7+', reconnectPeriod: 0 })
    await device.publishAsync('telemetry/a', 'x', { qos: 1 })

    const connectedEvent = await waitFor((m) => /^\$SYS\/broker\/[^/]+\/clients\/device%2F7%2B\/connected$/.test(m.topic), 'connected event')
    const nodeId = connectedEvent.topic.split('/')[2]
    const event = JSON.parse(connectedEvent.payload) as Record<string, unknown>
    assert.equal(event.clientId, 'device/7+')
    assert.equal(event.remoteAddress, '127.0.0.1')
    assert.equal(typeof event.remotePort, 'number')
    assert.equal(event.protocolVersion, 4)

    const prefix = `$SYS/broker/${nodeId}/`
    const clients = await waitFor((m) => m.topic === `${prefix}clients/connected` && m.payload === '2', 'clients/connected = 2')
    assert.equal(clients.retain, false, '$SYS statistics are not retained')
    await waitFor((m) => m.topic === `${prefix}messages/received` && Number(m.payload) >= 1, 'messages/received')
    await waitFor((m) => m.topic === `${prefix}version` && /^fleetmq version \d+\.\d+\.\d+/.test(m.payload), 'version')
    await waitFor((m) => m.topic === `${prefix}uptime` && /^\d+ seconds$/.test(m.payload), 'uptime')
    await waitFor((m) => m.topic === `${prefix}subscriptions/count` && m.payload === '1', 'subscriptions/count')
    await waitFor((m) => m.topic === `${prefix}retained messages/count`, 'retained messages/count')
    for (const suffix of ['clients/total', 'messages/sent', 'bytes/received', 'bytes/sent', 'publish/messages/dropped']) {
      await waitFor((m) => m.topic === prefix + suffix && /^\d+$/.test(m.payload), suffix)
    }

    await device.endAsync()
    const gone = await waitFor((m) => m.topic === `${prefix}clients/device%2F7%2B/disconnected`, 'disconnected event')
    assert.equal((JSON.parse(gone.payload) as { remoteAddress: string }).remoteAddress, '127.0.0.1')

    // '#' alone does not match $SYS topics [MQTT-4.7.2-1].
    const everything = await mqtt.connectAsync(url, { protocolVersion: 5, username: METRICS_ADMIN.username, password: METRICS_ADMIN.password, reconnectPeriod: 0 })
    const leaked: string[] = []
    everything.on('message', (topic) => { if (topic.startsWith('$SYS')) leaked.push(topic) })
    await everything.subscribeAsync('#', { qos: 0 })
    await new Promise((r) => setTimeout(r, 2_500))
    assert.deepEqual(leaked, [])
    await Promise.all([watcher.endAsync(), everything.endAsync()])
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})
