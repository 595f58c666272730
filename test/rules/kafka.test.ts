import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { startKafka, readTopic, waitForRecords, type KafkaBroker } from '../helpers/kafka.js'
import { metricValue, scrapeMetrics, METRICS_ADMIN } from '../helpers/metrics.js'
import { connectOnce } from '../helpers/mqtt-client.js'

/*
 * Rules into a real Apache Kafka (KRaft, one JVM, test/helpers/kafka.ts), read back with kcat.
 * One Kafka for the whole file: the JVM is the heaviest process the suite runs.
 */

const run = promisify(execFile)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
const describeLatencies = (values: number[]): { count: number; median: number; p99: number; max: number } => {
  const sorted = [...values].sort((a, b) => a - b)
  return { count: sorted.length, median: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] }
}

describe('rules into Kafka', () => {
  let kafka: KafkaBroker
  let broker: RunningFleetmq
  before(async () => {
    kafka = await startKafka({ sasl: { username: 'fleetmq', password: 'kafka-secret-1' } })
    console.log(`Kafka ${kafka.bootstrap} answered ${kafka.startMs()} ms after its JVM was spawned`)
    const secrets = join(kafka.dir, 'secrets')
    mkdirSync(secrets)
    writeFileSync(join(secrets, 'good'), 'kafka-secret-1\n')
    writeFileSync(join(secrets, 'bad'), 'not-the-secret\n')
    const saslConnector = (mechanism: string, file: string) => ({ type: 'kafka', bootstrap: [kafka.saslBootstrap], sasl: { mechanism, username: 'fleetmq', passwordFile: join(secrets, file) } })
    broker = await startFleetmq({
      users: [METRICS_ADMIN],
      config: {
        allowAnonymous: true,
        listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
        connectors: {
          local: { type: 'kafka', bootstrap: [kafka.bootstrap] },
          plain: saslConnector('plain', 'good'),
          scram256: saslConnector('scram-sha-256', 'good'),
          scram512: saslConnector('scram-sha-512', 'good'),
          wrong: saslConnector('scram-sha-512', 'bad'),
        },
        rules: [{
          id: 'hot',
          sql: 'SELECT clientid, payload.temp AS t FROM "devices/+/telemetry" WHERE payload.temp > 30',
          actions: [{ type: 'kafka', connector: 'local', topic: 'telemetry', key: '${clientid}', headers: { rule: 'hot' } }],
        }, {
          id: 'flow',
          sql: 'SELECT payload.seq AS seq FROM "flow/+"',
          actions: [{ type: 'kafka', connector: 'local', topic: 'flow', key: 'one-key', maxBackoff: 1_000 }],
        }, {
          id: 'sasl',
          sql: 'SELECT payload FROM "sasl/+"',
          actions: ['plain', 'scram256', 'scram512', 'wrong'].map((connector) => ({ type: 'kafka', connector, topic: `sasl-${connector}`, maxBackoff: 1_000 })),
        }],
      },
    })
  })
  after(async () => {
    await broker?.stop()
    await kafka?.destroy()
  })

  it('mosquitto_pub QoS 1 of a hot reading reaches the Kafka topic through the rule; a cold one does not', { timeout: 60_000 }, async () => {
    const publish = (payload: string) => run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(broker.ports.mqtt), '-i', 'd1', '-q', '1', '-t', 'devices/d1/telemetry', '-m', payload])
    await publish('{"temp":20}')
    await publish('{"temp":35}')
    await publish('{"temp":31}')
    const records = await waitForRecords(kafka.bootstrap, 'telemetry', 2)
    await sleep(500)
    assert.deepEqual((await readTopic(kafka.bootstrap, 'telemetry')).map((r) => [r.key, JSON.parse(r.payload ?? ''), r.headers]), [
      ['d1', { clientid: 'd1', t: 35 }, ['rule', 'hot']],
      ['d1', { clientid: 'd1', t: 31 }, ['rule', 'hot']],
    ])
    assert.equal(records.length, 2)
    const metrics = await scrapeMetrics(broker)
    assert.equal(metricValue(metrics, 'fleetmq_rule_matched_total', { rule: 'hot' }), 3)
    assert.equal(metricValue(metrics, 'fleetmq_rule_passed_total', { rule: 'hot' }), 2)
    assert.equal(metricValue(metrics, 'fleetmq_action_sent_total', { action: 'hot.1', type: 'kafka' }), 2)
  })

  it('SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 connectors write to a SASL listener; a wrong password is an alarm, not a crash', { timeout: 60_000 }, async () => {
    await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(broker.ports.mqtt), '-i', 'sasl-device', '-q', '1', '-t', 'sasl/1', '-m', 'hello'])
    for (const connector of ['plain', 'scram256', 'scram512']) {
      const records = await waitForRecords(kafka.bootstrap, `sasl-${connector}`, 1)
      assert.deepEqual(records.map((r) => JSON.parse(r.payload ?? '')), [{ payload: 'hello' }], connector)
    }
    await broker.waitForLog((l) => l.action === 'sasl.4' && /the sink refused a batch/.test(l.msg))
    const metrics = await scrapeMetrics(broker)
    assert.equal(metricValue(metrics, 'fleetmq_action_failing', { action: 'sasl.4' }), 1)
    assert.equal(metricValue(metrics, 'fleetmq_action_queued', { action: 'sasl.4' }), 1)
    assert.equal(metricValue(metrics, 'fleetmq_action_failing', { action: 'sasl.3' }), 0)
    assert.deepEqual(await readTopic(kafka.bootstrap, 'sasl-wrong').catch(() => []), [])
    const refusal = broker.logs.find((l) => l.action === 'sasl.4' && /the sink refused a batch/.test(l.msg))
    console.log(`a wrong SCRAM password: ${refusal?.msg}`)
    assert.match(refusal?.msg ?? '', /SASL SCRAM SHA512 authentication failed/i)
  })

  it('Kafka stopped for 20 s during a QoS 1 flow: every message arrives once it is back, and publishing was not slowed', { timeout: 180_000 }, async () => {
    const publisher = await connectOnce(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { clientId: 'flow-publisher' })
    const phases: Record<'before' | 'down' | 'after', number[]> = { before: [], down: [], after: [] }
    let phase: keyof typeof phases = 'before'
    let seq = 0
    let publishing = true
    // 50 messages a second, each waiting for its PUBACK: the PUBACK time is what a device sees.
    const flow = (async () => {
      while (publishing) {
        const began = performance.now()
        await publisher.publishAsync('flow/p1', JSON.stringify({ seq: seq++ }), { qos: 1 })
        phases[phase].push(performance.now() - began)
        await sleep(Math.max(0, 20 - (performance.now() - began)))
      }
    })()
    await sleep(4_000)
    const stopped = Date.now()
    await kafka.stop()
    phase = 'down'
    await sleep(20_000 - (Date.now() - stopped))
    const downFor = Date.now() - stopped
    const queuedWhileDown = metricValue(await scrapeMetrics(broker), 'fleetmq_action_queued', { action: 'flow.1' })
    await kafka.start()
    console.log(`Kafka was down ${downFor} ms; it answered ${kafka.startMs()} ms after its restart`)
    phase = 'after'
    await sleep(4_000)
    publishing = false
    await flow
    publisher.end()
    const sent = seq

    const records = await waitForRecords(kafka.bootstrap, 'flow', sent, 60_000)
    const seqs = records.map((r) => (JSON.parse(r.payload ?? '{}') as { seq: number }).seq)
    const distinct = new Set(seqs)
    const missing = Array.from({ length: sent }, (_, i) => i).filter((i) => !distinct.has(i))
    const duplicates = seqs.length - distinct.size
    const latency = { before: describeLatencies(phases.before), down: describeLatencies(phases.down), after: describeLatencies(phases.after) }
    const metrics = await scrapeMetrics(broker)
    console.log(JSON.stringify({ sent, records: records.length, duplicates, missing: missing.length, queuedWhileDown, pubackMs: latency, failedAttempts: metricValue(metrics, 'fleetmq_action_failed_total', { action: 'flow.1' }) }))

    assert.deepEqual(missing, [], 'every acknowledged message reached Kafka')
    // In order: each first appearance comes after the previous one (a resent batch may repeat some).
    const firsts = seqs.filter((s, i) => seqs.indexOf(s) === i)
    assert.deepEqual(firsts, [...firsts].sort((a, b) => a - b), 'one key, one partition: in the order published')
    assert.ok(queuedWhileDown > 0, 'messages waited in the action buffer while Kafka was down')
    assert.equal(metricValue(metrics, 'fleetmq_action_dropped_total', { action: 'flow.1' }), 0)
    assert.ok(metricValue(metrics, 'fleetmq_action_failed_total', { action: 'flow.1' }) > 0, 'the outage was seen')
    // PUBACKs while Kafka was down: no slower than a busy shared machine makes them anyway.
    assert.ok(latency.down.count > 500, `published through the outage (${latency.down.count})`)
    assert.ok(latency.down.median < Math.max(20, 3 * latency.before.median), `median PUBACK while down ${latency.down.median} ms vs ${latency.before.median} ms before`)
    assert.ok(broker.logs.some((l) => l.action === 'flow.1' && /the sink refused a batch/.test(l.msg)), 'the outage is logged (an alarm), once')
    assert.ok(broker.logs.some((l) => l.action === 'flow.1' && /takes messages again/.test(l.msg)), 'and the recovery')
  })
})
