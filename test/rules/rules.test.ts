import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { stringify as toYaml } from 'yaml'
import { brokerForFile, runCli } from '../helpers/fleetmq.js'
import { metricValue, scrapeMetrics, METRICS_ADMIN } from '../helpers/metrics.js'
import { connectOnce } from '../helpers/mqtt-client.js'
import { ActionQueue, type Sink } from '../../broker/rules/queue.js'
import { createLogger } from '../../broker/log.js'

/*
 * Rules without Kafka: the queue in front of every action, `fleetmq rule test`, the config check,
 * and a node whose rule republishes to a local topic. test/rules/kafka.test.ts has Kafka.
 */

const run = promisify(execFile)
const quiet = createLogger({ level: 'silent', format: 'json' })
const settings = { maxQueued: 5, maxBatch: 2, initialBackoffMs: 5, maxBackoffMs: 20 }
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(5)
  }
}

describe('the action queue', () => {
  it('keeps the order across failed attempts, retrying a batch before anything behind it', async () => {
    const received: number[] = []
    let failures = 3
    const sink: Sink<number> = {
      async send(batch) {
        if (failures-- > 0) throw new Error('sink down')
        received.push(...batch)
      },
      close: async () => {},
    }
    const queue = new ActionQueue('t', sink, { ...settings, maxQueued: 100 }, quiet)
    for (let i = 0; i < 10; i++) queue.push(i)
    await until(() => received.length === 10)
    assert.deepEqual(received, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert.equal(queue.stats.failed, 3)
    assert.equal(queue.stats.sent, 10)
    assert.equal(queue.stats.failing, false)
    await queue.close(100)
  })

  it('never waits for a stuck sink: push returns at once, the oldest is dropped past maxQueued and counted', async () => {
    const batches: number[][] = []
    let release: () => void = () => {}
    const sink: Sink<number> = {
      send: (batch) => {
        batches.push([...batch])
        return new Promise<void>((resolve) => { release = resolve })
      },
      close: async () => {},
    }
    const queue = new ActionQueue('t', sink, settings, quiet)
    const began = performance.now()
    for (let i = 0; i < 1_000; i++) queue.push(i)
    assert.ok(performance.now() - began < 50, 'pushing 1000 messages onto a stuck sink took no time')
    await until(() => batches.length === 1)
    // The sends start after the pushing turn: by then only the newest maxQueued were left.
    assert.equal(queue.stats.dropped, 1_000 - settings.maxQueued)
    assert.equal(queue.stats.queued, settings.maxQueued)
    assert.deepEqual(batches[0], [995, 996])
    for (let i = 1_000; i < 1_010; i++) queue.push(i)
    assert.equal(queue.stats.dropped, 1_010 - settings.maxQueued - 2, 'the batch in flight is not dropped')
    release()
    await until(() => batches.length === 2)
    assert.deepEqual(batches[1], [1_005, 1_006], 'the newest messages were kept, in order')
    release()
    await until(() => batches.length === 3)
    release()
    release()
    await until(() => batches.length === 4)
    release()
    await queue.close(100)
    assert.deepEqual(batches.slice(2), [[1_007, 1_008], [1_009]])
  })

  it('close gives the sink its grace, then counts what is left as dropped', async () => {
    const sink: Sink<number> = { send: () => Promise.reject(new Error('down')), close: async () => {} }
    const queue = new ActionQueue('t', sink, settings, quiet)
    queue.push(1)
    queue.push(2)
    await sleep(20)
    const began = Date.now()
    await queue.close(100)
    assert.ok(Date.now() - began < 1_000)
    assert.equal(queue.stats.dropped, 2)
    queue.push(3)
    assert.equal(queue.stats.dropped, 3, 'a closed queue takes nothing')
  })
})

describe('fleetmq rule test', () => {
  const sql = 'SELECT clientid, payload.temp AS t FROM "devices/+/telemetry" WHERE payload.temp > 30'

  it('prints the output of a message that passes, as JSON with --json', async () => {
    const passed = await runCli(['rule', 'test', '--sql', sql, '--topic', 'devices/d1/telemetry', '--clientid', 'd1', '--payload', '{"temp":35}', '--json'])
    assert.equal(passed.code, 0, passed.stderr)
    assert.deepEqual(JSON.parse(passed.stdout), { matched: true, passed: true, output: { clientid: 'd1', t: 35 } })
    const human = await runCli(['rule', 'test', '--sql', sql, '--topic', 'devices/d1/telemetry', '--clientid', 'd1', '--payload', '{"temp":35}'])
    assert.deepEqual(JSON.parse(human.stdout), { clientid: 'd1', t: 35 })
  })

  it('says when WHERE is false or the topic does not match', async () => {
    const cold = await runCli(['rule', 'test', '--sql', sql, '--topic', 'devices/d1/telemetry', '--payload', '{"temp":20}'])
    assert.equal(cold.code, 0)
    assert.equal(cold.stdout.trim(), 'no output: WHERE is not true for this message')
    const other = await runCli(['rule', 'test', '--sql', sql, '--topic', 'other/t', '--payload', '{"temp":35}', '--json'])
    assert.deepEqual(JSON.parse(other.stdout), { matched: false, passed: false })
    const wildcard = await runCli(['rule', 'test', '--sql', sql, '--payload', '{}'])
    assert.equal(wildcard.code, 1)
    assert.match(wildcard.stderr, /FROM has only wildcard filters \(devices\/\+\/telemetry\): give the sample's topic with --topic/)
  })

  it('refuses a rule that does not compile with line:column, what was expected and a caret', async () => {
    const bad = await runCli(['rule', 'test', '--sql', 'SELECT clientid FROM "t" WHERE payload.temp >> 30', '--topic', 't'])
    assert.equal(bad.code, 1)
    assert.equal(bad.stderr, [
      "fleetmq: the rule does not compile: 1:46: expected a value (a field, a number, a string, a function call or '('), found '>' [FLEETMQ_ERR_RULE_INVALID]",
      '  - SELECT clientid FROM "t" WHERE payload.temp >> 30',
      '  -                                              ^',
      '',
    ].join('\n'))
    const json = await runCli(['rule', 'test', '--sql', 'SELECT nope() FROM "t"', '--json'])
    assert.equal(JSON.parse(json.stdout).error.code, 'FLEETMQ_ERR_RULE_INVALID')
  })
})

describe('rules in the config', () => {
  const check = async (config: Record<string, unknown>) => {
    const dir = mkdtempSync(join(tmpdir(), 'fleetmq-rules-'))
    writeFileSync(join(dir, 'c.yaml'), toYaml(config))
    return runCli(['config', 'check', join(dir, 'c.yaml')])
  }
  const kafka = { main: { type: 'kafka', bootstrap: ['127.0.0.1:9092'] } }

  it('fleetmq config check refuses a bad rule, naming the key and the fix', async () => {
    const result = await check({
      connectors: { ...kafka, weak: { type: 'kafka', bootstrap: ['127.0.0.1:9092'], acks: 'leader' }, other: { type: 'rabbitmq' } },
      rules: [
        { id: 'r1', sql: 'SELECT * FROM "devices/+/telemetry" WHERE payload.temp >', actions: [{ type: 'kafka', connector: 'mian', topic: 'telemetry' }] },
        { id: 'r1', sql: 'SELECT * FROM "t"', actions: [{ type: 'republish', topic: 'alerts/${clientid' }] },
        { id: 'r3', sql: 'SELECT * FROM "t"', actions: [] },
      ],
    })
    assert.equal(result.code, 1)
    const lines = result.stderr.split('\n')
    const expected = [
      "  - connectors.weak.idempotent: an idempotent producer needs acks: all; set acks: all or idempotent: false",
      '  - connectors.other.type: type must be kafka (RabbitMQ, SQL, HTTP and MQTT bridge connectors are not built yet)',
      "  - rules[0].sql: 1:57: expected a value (a field, a number, a string, a function call or '('), found the end of the rule (docs/rules.md has the syntax; try it with fleetmq rule test --sql)",
      "  - rules[1].actions[0].topic: '${' at character 8 has no closing '}'; write ${field} with a field of the rule's SELECT",
      '  - rules[2].actions: a rule needs at least one action (republish or kafka)',
    ]
    for (const line of expected) assert.ok(lines.includes(line), `${line}\nin:\n${result.stderr}`)
  })

  it('names a missing connector and a repeated rule id', async () => {
    const result = await check({
      connectors: kafka,
      rules: [
        { id: 'r1', sql: 'SELECT * FROM "t"', actions: [{ type: 'kafka', connector: 'mian', topic: 'telemetry' }] },
        { id: 'r1', sql: 'SELECT * FROM "t"', actions: [{ type: 'republish', topic: 'x' }] },
      ],
    })
    assert.equal(result.code, 1)
    assert.match(result.stderr, /- rules\[0\]\.actions\[0\]\.connector: no connector named "mian"; use one of main\n/)
    assert.match(result.stderr, /- rules\[1\]\.id: "r1" is already the id of rules\[0\]; give each rule its own id\n/)
  })

  it('a node refuses to start when a connector\'s password file cannot be read, naming the key', { timeout: 30_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleetmq-rules-'))
    writeFileSync(join(dir, 'c.yaml'), toYaml({
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      mgmt: { port: 0 },
      connectors: { k: { type: 'kafka', bootstrap: ['127.0.0.1:9'], sasl: { mechanism: 'scram-sha-256', username: 'u', passwordFile: join(dir, 'missing') } } },
      rules: [{ id: 'r', sql: 'SELECT * FROM "t"', actions: [{ type: 'kafka', connector: 'k', topic: 't' }] }],
    }))
    const result = await runCli(['start', '--config', join(dir, 'c.yaml'), '--data-dir', dir, '--log-format', 'json'])
    assert.equal(result.code, 1)
    assert.match(result.stderr, new RegExp(`fleetmq: cannot read connectors\\.k\\.sasl\\.passwordFile ${join(dir, 'missing')}: ENOENT`))
  })

  it('accepts a valid rule with its defaults', async () => {
    const result = await check({ connectors: kafka, rules: [{ id: 'r1', sql: 'SELECT * FROM "t"', actions: [{ type: 'kafka', connector: 'main', topic: 'telemetry', key: '${clientid}' }] }] })
    assert.equal(result.code, 0, result.stderr)
  })
})

describe('a node with a republish rule', () => {
  const file = brokerForFile({
    users: [METRICS_ADMIN],
    config: {
      allowAnonymous: true,
      listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
      rules: [{
        id: 'hot',
        sql: 'SELECT clientid, payload.temp AS t FROM "devices/+/telemetry" WHERE payload.temp > 30',
        actions: [{ type: 'republish', topic: 'alerts/${clientid}', qos: 1 }],
      }, {
        id: 'broken',
        sql: 'SELECT payload.temp * 2 AS double FROM "devices/+/telemetry"',
        actions: [{ type: 'republish', topic: 'doubled' }],
      }, {
        id: 'sessions',
        sql: 'SELECT clientid, event, peerhost FROM "$events/client_connected", "$events/client_disconnected"',
        actions: [{ type: 'republish', topic: 'events/${event}/${clientid}' }],
      }, {
        id: 'subscriptions',
        sql: 'SELECT clientid, topic, qos FROM "$events/session_subscribed" WHERE clientid = \'ev1\'',
        actions: [{ type: 'republish', topic: 'events/session_subscribed/${clientid}' }],
      }],
    },
  })

  it('a hot reading from mosquitto_pub arrives on alerts/<client>, a cold one does not, and /metrics counts both', { timeout: 30_000 }, async () => {
    const subscriber = await connectOnce(`mqtt://127.0.0.1:${file.port}`, { clientId: 'watcher' })
    const received: { topic: string; payload: string }[] = []
    subscriber.on('message', (topic, payload) => received.push({ topic, payload: payload.toString() }))
    await subscriber.subscribeAsync(['alerts/#', 'doubled'], { qos: 1 })
    const publish = (payload: string) => run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(file.port), '-i', 'd1', '-q', '1', '-t', 'devices/d1/telemetry', '-m', payload])
    await publish('{"temp":20}')
    await publish('{"temp":35}')
    await publish('{"temp":"hot"}')
    await until(() => received.some((m) => m.topic === 'alerts/d1'))
    await sleep(300)
    subscriber.end()
    assert.deepEqual(received.filter((m) => m.topic === 'alerts/d1').map((m) => JSON.parse(m.payload)), [{ clientid: 'd1', t: 35 }])
    assert.deepEqual(received.filter((m) => m.topic === 'doubled').map((m) => JSON.parse(m.payload)), [{ double: 40 }, { double: 70 }])
    const metrics = await scrapeMetrics(file.broker)
    assert.equal(metricValue(metrics, 'fleetmq_rule_matched_total', { rule: 'hot' }), 3)
    assert.equal(metricValue(metrics, 'fleetmq_rule_passed_total', { rule: 'hot' }), 1)
    assert.equal(metricValue(metrics, 'fleetmq_rule_failed_total', { rule: 'broken' }), 1, '"hot" * 2 fails')
    assert.equal(metricValue(metrics, 'fleetmq_action_sent_total', { action: 'hot.1', type: 'republish' }), 1)
    assert.equal(metricValue(metrics, 'fleetmq_action_queued', { action: 'hot.1' }), 0)
    assert.equal(metricValue(metrics, 'fleetmq_action_dropped_total', { action: 'hot.1' }), 0)
    assert.equal(metricValue(metrics, 'fleetmq_action_latency_seconds_count', { action: 'hot.1' }), 1)
    assert.ok(file.broker.logs.some((l) => l.rule === 'broken' && /'\*' needs numbers, got "hot"/.test(l.msg)), 'the failure is logged with its reason')
  })

  it('client events: connected, subscribed and disconnected go through the rules that take them', { timeout: 30_000 }, async () => {
    const watcher = await connectOnce(`mqtt://127.0.0.1:${file.port}`, { clientId: 'event-watcher' })
    const received: { topic: string; payload: Record<string, unknown> }[] = []
    watcher.on('message', (topic, payload) => received.push({ topic, payload: JSON.parse(payload.toString()) as Record<string, unknown> }))
    await watcher.subscribeAsync('events/#', { qos: 1 })
    const device = await connectOnce(`mqtt://127.0.0.1:${file.port}`, { clientId: 'ev1' })
    await device.subscribeAsync({ 'x/y': { qos: 1 }, 'x/z': { qos: 0 } })
    await device.endAsync()
    await until(() => received.some((m) => m.topic === 'events/client_disconnected/ev1'))
    watcher.end()
    // Each rule's actions keep their order; two rules' outputs may interleave.
    const on = (topic: string) => received.filter((m) => m.topic === topic).map((m) => m.payload)
    assert.deepEqual(on('events/client_connected/ev1'), [{ clientid: 'ev1', event: 'client_connected', peerhost: '127.0.0.1' }])
    assert.deepEqual(on('events/session_subscribed/ev1'), [{ clientid: 'ev1', topic: 'x/y', qos: 1 }, { clientid: 'ev1', topic: 'x/z', qos: 0 }])
    assert.deepEqual(on('events/client_disconnected/ev1'), [{ clientid: 'ev1', event: 'client_disconnected', peerhost: '127.0.0.1' }])
  })
})
