import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { startKafka, readTopic, waitForRecords, type KafkaBroker } from '../helpers/kafka.js'
import { metricValue, scrapeMetrics, METRICS_ADMIN } from '../helpers/metrics.js'

/*
 * The failure test: the node holding a backlog is killed -9, and what it had acknowledged
 * (PUBACK) is sent to Kafka after its restart, from the action's spill log on disk. Kafka is down
 * from the start (its folder formatted, its JVM started only at the end: one Kafka start).
 */

const N = 3_000

/** mosquitto_pub -l: one QoS 1 message per line on one connection; exits 0 once every PUBACK came. */
async function publishLines(port: number, topic: string, lines: readonly string[]): Promise<number> {
  const began = performance.now()
  const child = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'crash-pub', '-q', '1', '-t', topic, '-l'], { stdio: ['pipe', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.stdin.end(lines.join('\n') + '\n')
  const [code] = await once(child, 'exit') as [number | null]
  assert.equal(code, 0, `mosquitto_pub failed: ${stderr}`)
  return performance.now() - began
}

describe('an action\'s spill log across kill -9', () => {
  let kafka: KafkaBroker | undefined
  let broker: RunningFleetmq | undefined
  const dataDir = mkdtempSync(join(tmpdir(), 'fleetmq-spill-node-'))
  after(async () => {
    await broker?.stop()
    await kafka?.destroy()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('sends to Kafka, after a restart on the same data dir, every message whose PUBACK the publisher had', { timeout: 150_000 }, async () => {
    const began = Date.now()
    kafka = await startKafka({ deferStart: true })
    const config = {
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      connectors: { local: { type: 'kafka', bootstrap: [kafka.bootstrap], connectTimeout: 1_000 } },
      rules: [{
        id: 'crash',
        sql: 'SELECT payload.seq AS seq FROM "crash/+"',
        // maxQueued 100: most of the backlog is on disk only, read back after the restart.
        actions: [{ type: 'kafka', connector: 'local', topic: 'crash', key: 'one-key', maxQueued: 100, maxBatch: 500, maxBackoff: 1_000 }],
      }],
    }
    broker = await startFleetmq({ dataDir, users: [METRICS_ADMIN], config })
    const publishMs = await publishLines(broker.ports.mqtt, 'crash/d1', Array.from({ length: N }, (_, i) => JSON.stringify({ seq: i })))
    const metrics = await scrapeMetrics(broker)
    assert.equal(metricValue(metrics, 'fleetmq_action_queued', { action: 'crash.1' }), N, 'every acknowledged message waits for Kafka')
    const spilledMessages = metricValue(metrics, 'fleetmq_action_spilled_messages', { action: 'crash.1' })
    const spilledBytes = metricValue(metrics, 'fleetmq_action_spilled_bytes', { action: 'crash.1' })
    assert.ok(spilledMessages >= N - 600, `${spilledMessages} messages on disk only (past maxQueued)`)

    const exited = once(broker.process, 'exit')
    broker.process.kill('SIGKILL')
    await exited
    broker = undefined
    assert.ok(readdirSync(join(dataDir, 'actions', 'crash.1')).some((f) => f.endsWith('.log')), 'the spill log is in <dataDir>/actions/<action>/')

    broker = await startFleetmq({ dataDir, config })
    await kafka.start()
    const kafkaUp = Date.now()
    await waitForRecords(kafka.bootstrap, 'crash', N, 60_000)
    const allInMs = Date.now() - kafkaUp
    await new Promise((r) => setTimeout(r, 500))
    const seqs = (await readTopic(kafka.bootstrap, 'crash')).map((r) => (JSON.parse(r.payload ?? '{}') as { seq: number }).seq)
    const unique = new Set(seqs)
    const duplicates = seqs.length - unique.size
    console.log(`kill -9 with ${N} QoS 1 messages acknowledged (published in ${Math.round(publishMs)} ms, ${Math.round(N / (publishMs / 1000))} msg/s with fsync before PUBACK; ${spilledMessages} on disk only, ${spilledBytes} bytes of log): ${unique.size} of ${N} in Kafka ${allInMs} ms after it answered, ${duplicates} duplicates; whole test ${Date.now() - began} ms`)
    assert.equal(unique.size, N, 'every acknowledged message is in Kafka')
    assert.deepEqual([...unique], Array.from({ length: N }, (_, i) => i), 'in the order they were published')
    assert.ok(broker.logs.some((l) => /from before the restart are sent first/.test(String(l.msg))), 'the restart says it replays its spill log')
  })
})
