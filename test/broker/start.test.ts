import { test } from 'node:test'
import assert from 'node:assert/strict'
import mqtt from 'mqtt'
import { startFleetmq, runCli } from '../helpers/fleetmq.js'

test('fleetmq start --allow-anonymous serves MQTT.js pub/sub and warns that anonymous access is on', async () => {
  const broker = await startFleetmq({ args: ['--allow-anonymous'] })
  try {
    assert.ok(broker.logs.some((l) => l.level === 40 && /allowAnonymous is on/.test(l.msg)))
    const sub = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { protocolVersion: 4 })
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { protocolVersion: 4 })
    await sub.subscribeAsync('greetings/#', { qos: 1 })
    const received = new Promise<[string, string]>((resolve) => sub.on('message', (t, p) => resolve([t, p.toString()])))
    await pub.publishAsync('greetings/world', 'hello', { qos: 1 })
    assert.deepEqual(await received, ['greetings/world', 'hello'])
    await Promise.all([sub.endAsync(), pub.endAsync()])
  } finally {
    assert.equal(await broker.stop(), 0)
  }
})

test('without --allow-anonymous an anonymous client is refused', async () => {
  const broker = await startFleetmq()
  try {
    await assert.rejects(
      mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { protocolVersion: 5, reconnectPeriod: 0 }),
      /Not authorized|Bad User Name or Password|bad user name/i,
    )
  } finally {
    await broker.stop()
  }
})

test('a port in use gives a one-line cause and exit 1', async () => {
  const first = await startFleetmq({ args: ['--allow-anonymous'] })
  try {
    const second = await runCli(['start', '--allow-anonymous', '--mqtt', `127.0.0.1:${first.ports.mqtt}`, '--mgmt', '127.0.0.1:0', '--log-format', 'json'])
    assert.equal(second.code, 1)
    assert.match(second.stderr, /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\).*FLEETMQ_ERR_LISTEN_FAILED/)
  } finally {
    await first.stop()
  }
})

test('a malformed flag names the flag and what is allowed', async () => {
  const result = await runCli(['start', '--mqtt', 'nonsense'])
  assert.equal(result.code, 1)
  assert.match(result.stderr, /--mqtt.*expected HOST:PORT/)
})
