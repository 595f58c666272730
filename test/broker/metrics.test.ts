import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { startFleetmq } from '../helpers/fleetmq.js'
import { METRICS_ADMIN, metricValue, mgmtGet, scrapeMetrics } from '../helpers/metrics.js'

/*
 * The management port: open health endpoints, Prometheus metrics behind admin credentials, and
 * counters that follow what clients do.
 */

test('/healthz and /readyz are open; /metrics needs an admin and speaks Prometheus text', { timeout: 60_000 }, async () => {
  const broker = await startFleetmq({ users: [METRICS_ADMIN], args: ['--allow-anonymous'] })
  try {
    const health = await mgmtGet(broker, '/healthz', null)
    assert.equal(health.status, 200)
    const ready = await mgmtGet(broker, '/readyz', null)
    assert.equal(ready.status, 200)
    // Public, so it says up or down and nothing of the backend (addresses, errors).
    assert.deepEqual(await ready.json(), { ready: true })

    const anonymous = await mgmtGet(broker, '/metrics', null)
    assert.equal(anonymous.status, 401)
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /Basic/)
    const wrong = await mgmtGet(broker, '/metrics', { username: METRICS_ADMIN.username, password: 'not-the-password' })
    assert.equal(wrong.status, 401)

    const res = await mgmtGet(broker, '/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    const text = await res.text()
    for (const name of ['fleetmq_connections', 'fleetmq_messages_received_total', 'fleetmq_messages_sent_total', 'fleetmq_bytes_received_total',
      'fleetmq_bytes_sent_total', 'fleetmq_subscriptions', 'fleetmq_retained_messages', 'fleetmq_queued_messages', 'fleetmq_messages_dropped_total',
      'fleetmq_auth_failures_total', 'fleetmq_limit_hits_total', 'nodejs_eventloop_lag_seconds', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exported`)
    }
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

test('counters follow the traffic: messages by QoS, bytes, connections, subscriptions, retained, auth failures', { timeout: 60_000 }, async () => {
  const broker = await startFleetmq({ users: [METRICS_ADMIN], args: ['--allow-anonymous'] })
  try {
    const url = `mqtt://127.0.0.1:${broker.ports.mqtt}`
    const sub = await mqtt.connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 })
    const pub = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 })
    await sub.subscribeAsync(['counted/#', 'other/+'], { qos: 1 })
    let received = 0
    sub.on('message', () => { received++ })
    for (let i = 0; i < 3; i++) await pub.publishAsync('counted/zero', 'a', { qos: 0 })
    for (let i = 0; i < 2; i++) await pub.publishAsync('counted/one', 'b', { qos: 1 })
    await pub.publishAsync('counted/two', 'c', { qos: 2 })
    await pub.publishAsync('retained/one', 'kept', { qos: 1, retain: true })
    const deadline = Date.now() + 10_000
    while (received < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(received, 6)

    await assert.rejects(mqtt.connectAsync(url, { protocolVersion: 5, username: METRICS_ADMIN.username, password: 'wrong', reconnectPeriod: 0 }))

    const text = await scrapeMetrics(broker)
    assert.equal(metricValue(text, 'fleetmq_messages_received_total', { qos: '0' }), 3)
    assert.equal(metricValue(text, 'fleetmq_messages_received_total', { qos: '1' }), 3)
    assert.equal(metricValue(text, 'fleetmq_messages_received_total', { qos: '2' }), 1)
    assert.equal(metricValue(text, 'fleetmq_messages_sent_total', { qos: '0' }), 3)
    // Sent counts the QoS of the delivery: the QoS 2 message went out at the subscription's QoS 1.
    assert.equal(metricValue(text, 'fleetmq_messages_sent_total', { qos: '1' }), 3)
    assert.equal(metricValue(text, 'fleetmq_messages_sent_total', { qos: '2' }), 0)
    assert.equal(metricValue(text, 'fleetmq_connections'), 2)
    assert.equal(metricValue(text, 'fleetmq_subscriptions'), 2)
    assert.equal(metricValue(text, 'fleetmq_retained_messages'), 1)
    assert.equal(metricValue(text, 'fleetmq_auth_failures_total'), 1)
    assert.ok(metricValue(text, 'fleetmq_bytes_received_total') > 100)
    assert.ok(metricValue(text, 'fleetmq_bytes_sent_total') > 100)
    assert.ok(metricValue(text, 'fleetmq_connections_total') >= 2)
    assert.ok(metricValue(text, 'nodejs_eventloop_lag_seconds') >= 0)
    assert.ok(metricValue(text, 'process_resident_memory_bytes') > 10_000_000)

    await Promise.all([sub.endAsync(), pub.endAsync()])
    // Counters are totals: they never go down when clients leave; gauges do.
    const later = await scrapeMetrics(broker)
    assert.equal(metricValue(later, 'fleetmq_messages_received_total', { qos: '0' }), 3)
    assert.ok(metricValue(later, 'fleetmq_bytes_received_total') >= metricValue(text, 'fleetmq_bytes_received_total'))
    let connections = metricValue(later, 'fleetmq_connections')
    for (let i = 0; i < 50 && connections !== 0; i++) {
      await new Promise((r) => setTimeout(r, 100))
      connections = metricValue(await scrapeMetrics(broker), 'fleetmq_connections')
    }
    assert.equal(connections, 0)
  } finally {
    await broker.stop()
  }
})
