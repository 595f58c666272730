import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import mqtt from 'mqtt'
import { startFleetmq } from '../helpers/fleetmq.js'
import { rawClient } from '../helpers/raw-client.js'

/*
 * SIGTERM drains: listeners stop accepting, 5.0 clients get DISCONNECT 0x8B Server shutting down,
 * the others a closed connection, and the process exits 0 within shutdownTimeout, even with a
 * client that stopped reading and a connection that never sent CONNECT.
 */

test('SIGTERM: DISCONNECT 0x8B to 5.0 clients, closed connections for the rest, exit 0 within shutdownTimeout', { timeout: 60_000 }, async () => {
  const shutdownTimeout = 4
  const broker = await startFleetmq({
    config: { allowAnonymous: true, shutdownTimeout, listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }] },
  })
  const port = broker.ports.mqtt
  const v5 = await rawClient(port, 5)
  assert.equal((await v5.connect({ clientId: 'modern' })).reasonCode, 0)

  const v4 = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'legacy', reconnectPeriod: 0 })
  const v4Closed = new Promise<void>((resolve) => v4.once('close', () => resolve()))

  // A subscriber that stopped reading, its socket full of messages.
  const stuck = await rawClient(port, 5)
  await stuck.connect({ clientId: 'stuck' })
  stuck.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fill/#', qos: 0 }] })
  await stuck.waitFor('suback')
  stuck.stopReading()
  const filler = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0 })
  const payload = Buffer.alloc(16 * 1024, 1)
  for (let i = 0; i < 100; i++) filler.publish('fill/x', payload, { qos: 0 })
  await filler.endAsync()

  // A connection that never sends CONNECT.
  const silent = net.connect(port, '127.0.0.1')
  await once(silent, 'connect')
  const silentClosed = once(silent, 'close')
  silent.on('error', () => undefined)

  const started = Date.now()
  const code = await broker.stop('SIGTERM')
  const elapsed = Date.now() - started
  assert.equal(code, 0, 'a clean drain exits 0')
  assert.ok(elapsed < shutdownTimeout * 1000, `stopped in ${elapsed} ms, within shutdownTimeout ${shutdownTimeout} s`)

  const disconnect = await v5.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, 0x8b)
  await v5.closed()
  await v4Closed
  await silentClosed
  stuck.socket.resume()
  await stuck.closed()

  assert.ok(broker.logs.some((l) => /draining 3 clients: 2 MQTT 5\.0 clients get DISCONNECT 0x8B Server shutting down, 1 older clients a closed connection/.test(l.msg)), 'the drain is logged')
  assert.ok(broker.logs.some((l) => l.msg === 'stopped'))

  // Nothing listens any more.
  const refused = net.connect(port, '127.0.0.1')
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException]
  assert.equal(err.code, 'ECONNREFUSED')
})

// The listeners are up before the node has finished starting (management API, cluster): a
// supervisor's signal in that window must not meet Node's default action, which kills the process.
test('SIGHUP as soon as the first listener is up reloads once the node has started, and does not kill it', { timeout: 60_000 }, async () => {
  const broker = await startFleetmq({
    users: [{ username: 'bob', password: 'bob-secret-1' }],
    onLog: (line, child) => {
      if (/^listening for/.test(line.msg)) child.kill('SIGHUP')
    },
  })
  await broker.waitForLog((l) => /reloaded the user store: 1 user/.test(l.msg))
  const bob = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { username: 'bob', password: 'bob-secret-1', reconnectPeriod: 0 })
  await bob.endAsync()
  assert.equal(await broker.stop(), 0)
})

test('SIGTERM as soon as the first listener is up stops the node cleanly once it has started', { timeout: 60_000 }, async () => {
  let exited: Promise<unknown[]> | undefined
  const broker = await startFleetmq({
    config: { allowAnonymous: true, listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }] },
    onLog: (line, child) => {
      if (/^listening for/.test(line.msg) && exited === undefined) {
        exited = once(child, 'exit')
        child.kill('SIGTERM')
      }
    },
  }).catch((err: Error) => err)
  assert.ok(exited, 'the first listener came up')
  const [code, signal] = await exited
  assert.equal(signal, null, 'not killed by the signal')
  assert.equal(code, 0)
  if (!(broker instanceof Error)) assert.ok(broker.logs.some((l) => l.msg === 'stopped'))
})
