import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import mqtt from 'mqtt'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { rawClient } from '../helpers/raw-client.js'
import { rawConnect } from '../helpers/raw-mqtt.js'
import { runPaho, type PahoEvent } from '../helpers/paho.js'
import { runProgram as run } from '../helpers/program.js'

/*
 * Interoperability with clients we did not write, on the default configuration: each test is a
 * spec clause a real client hit (issue 18), checked with Eclipse Paho for Python (its own decoder,
 * strict about which property belongs on which packet), mosquitto's clients or MQTT.js, and with a
 * raw client for what they hide (the exact bytes, a burst no library sends).
 */

let broker: RunningFleetmq
let port: number
let seq = 0
const id = (name: string): string => `${name}-${process.pid}-${++seq}`
const topicOf = (name: string): string => `interop/${id(name)}`

before(async () => {
  broker = await startFleetmq({ args: ['--allow-anonymous'] })
  port = broker.ports.mqtt
})
after(async () => {
  assert.equal(await broker.stop(), 0)
})

const connack = (events: PahoEvent[]): PahoEvent | undefined => events.find((e) => e.event === 'connack')

test('Keep Alive 0 is accepted by default: Paho 3.1.1 and 5.0, MQTT.js 3.1.1, a raw 3.1 client [MQTT 3.1.1 §3.1.2.10, 5.0 §3.1.2.10]', async () => {
  for (const version of [4, 5] as const) {
    const events = await runPaho({ port, version, clientId: id(`ka0-paho${version}`), keepalive: 0, hold: 0.2 }).finished
    assert.equal(connack(events)?.reasonCode, 0, `Paho MQTT ${version === 4 ? '3.1.1' : '5.0'}: ${JSON.stringify(events)}`)
    // No Server Keep Alive unless limits.serverKeepAlive is configured: the client's 0 stands.
    assert.equal(connack(events)?.properties?.ServerKeepAlive, undefined)
  }
  const js = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, keepalive: 0, reconnectPeriod: 0 })
  await js.endAsync()
  const v31 = await rawClient(port, 3)
  assert.equal((await v31.connect({ clientId: 'ka0-v31', keepalive: 0 })).returnCode, 0)
  v31.destroy()
})

test('a resumed 5.0 session (Clean Start 0, no Session Expiry on the reconnect) gets its queued messages, with the remaining Message Expiry [5.0 §4.1, §3.3.2.3.3]', async () => {
  const topic = topicOf('resume')
  const clientId = id('resume')
  const first = await runPaho({ port, clientId, connectProperties: { SessionExpiryInterval: 99_999 }, subscribe: [[topic, 2]], hold: 0.1 }).finished
  assert.deepEqual(first.find((e) => e.event === 'suback')?.granted, [2])
  // Published by clients we did not write either, while the subscriber is away.
  for (const [qos, extra] of [['1', []], ['2', ['-D', 'publish', 'message-expiry-interval', '100']]] as const) {
    const pub = await run('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-t', topic, '-q', qos, '-m', `q${qos}`, ...extra])
    assert.equal(pub.code, 0, pub.stderr)
  }
  await sleep(2_100)
  const resumed = await runPaho({ port, clientId, cleanStart: false, expect: 2, timeout: 10 }).finished
  assert.equal(connack(resumed)?.sessionPresent, true, JSON.stringify(resumed))
  const messages = resumed.filter((e) => e.event === 'message')
  assert.deepEqual(messages.map((m) => [m.payload, m.qos]), [['q1', 1], ['q2', 2]], JSON.stringify(resumed))
  const left = messages[1].properties?.MessageExpiryInterval as number
  assert.ok(left >= 90 && left <= 98, `the remaining lifetime after 2 s of 100 s, got ${left}`)
  assert.equal(messages[0].properties?.MessageExpiryInterval, undefined)
})

test('the same with a raw client: CONNACK Session Present 1, then the queued QoS 1 message', async () => {
  const topic = topicOf('resume-raw')
  const clientId = id('resume-raw')
  const first = await rawConnect(port, { clientId, clean: true, properties: { sessionExpiryInterval: 60 } })
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
  await first.waitFor((p) => p.cmd === 'suback')
  first.send({ cmd: 'disconnect' })
  await first.closed
  const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
  await pub.publishAsync(topic, 'queued', { qos: 1 })
  await pub.endAsync()
  const back = await rawClient(port, 5)
  const ack = await back.connect({ clientId, clean: false })
  assert.equal(ack.sessionPresent, true)
  const message = await back.waitFor('publish')
  assert.equal(message.payload.toString(), 'queued')
  back.send({ cmd: 'puback', messageId: message.messageId })
  back.destroy()
})

test('the will PUBLISH carries the PUBLISH properties of the will, never Will Delay Interval [5.0 §3.1.3.2, §3.3.2.3]', async () => {
  const topic = topicOf('will')
  const watcher = runPaho({ port, clientId: id('will-watch'), subscribe: [[topic, 1]], expect: 1, timeout: 10 })
  const raw = await rawConnect(port, { clientId: id('will-raw-watch') })
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
  await raw.waitFor((p) => p.cmd === 'suback')
  await watcher.waitFor((e) => e.event === 'subscribed')
  await sleep(300)
  const dying = await runPaho({
    port,
    clientId: id('will-sender'),
    will: {
      topic, payload: '{"gone":true}', qos: 1,
      properties: {
        WillDelayInterval: 0, PayloadFormatIndicator: 1, MessageExpiryInterval: 300, ContentType: 'application/json',
        ResponseTopic: `${topic}/reply`, CorrelationData: 'c-1', UserProperty: [['b', '2'], ['b', '3'], ['a', '1']],
      },
    },
    drop: true,
  }).finished
  assert.equal(connack(dying)?.reasonCode, 0)
  const events = await watcher.finished
  const will = events.find((e) => e.event === 'message')
  assert.ok(will, `Paho got no will (a property it refuses ends its connection): ${JSON.stringify(events)}`)
  assert.equal(events.find((e) => e.event === 'disconnect' && e.reasonCode !== 0), undefined, JSON.stringify(events))
  assert.equal(will.payload, '{"gone":true}')
  assert.equal(will.properties?.ContentType, 'application/json')
  assert.equal(will.properties?.ResponseTopic, `${topic}/reply`)
  assert.equal(will.properties?.CorrelationData, Buffer.from('c-1').toString('hex'))
  assert.equal(will.properties?.PayloadFormatIndicator, 1)
  // In order [MQTT-3.3.2-18]. (Repeats of one name interleaved with other names come back grouped by
  // name: mqtt-packet decodes User Properties into an object; docs/protocol.md.)
  assert.deepEqual(will.properties?.UserProperty, [['b', '2'], ['b', '3'], ['a', '1']])
  const onWire = await raw.waitFor<IPublishPacket>((p) => p.cmd === 'publish')
  assert.deepEqual(Object.keys(onWire.properties ?? {}).sort(),
    ['contentType', 'correlationData', 'messageExpiryInterval', 'payloadFormatIndicator', 'responseTopic', 'userProperties'])
  raw.destroy()
})

test('more QoS 2 PUBLISH packets than the Receive Maximum: the client reads DISCONNECT 0x93, not a reset [5.0 §3.3.4, §4.9]', async () => {
  const topic = topicOf('rm')
  const client = await rawClient(port, 5)
  assert.equal((await client.connect({ clientId: id('rm-raw') })).reasonCode, 0)
  // More than the default Receive Maximum (100), in several writes, and still sending when the
  // broker decides: the broker must not close on unread bytes (a TCP reset loses the DISCONNECT).
  for (let burst = 0; burst < 6; burst++) {
    const packets: Packet[] = []
    for (let i = 1; i <= 50; i++) packets.push({ cmd: 'publish', topic, payload: Buffer.alloc(200), qos: 2, messageId: burst * 50 + i, retain: false, dup: false })
    for (const packet of packets) client.send(packet)
    await sleep(5)
  }
  const disconnect = await client.waitFor('disconnect')
  assert.equal(disconnect.reasonCode, 0x93)
  await client.closed()

  // A client that reads its socket only now and then, as a single-threaded one does: it is still
  // writing (its PUBRELs, a PINGREQ) after the broker decided. Closing on those unread bytes answers
  // them with a TCP reset, and the client's next write or read fails before it reads the
  // DISCONNECT. The broker closes its side after the DISCONNECT and reads what still comes.
  const slow = await rawClient(port, 5)
  assert.equal((await slow.connect({ clientId: id('rm-slow') })).reasonCode, 0)
  slow.socket.pause()
  for (let i = 1; i <= 101; i++) slow.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 2, messageId: i, retain: false, dup: false })
  await sleep(500)
  for (let i = 0; i < 3; i++) {
    slow.send({ cmd: 'pubrel', messageId: i + 1 })
    await sleep(100)
  }
  slow.socket.resume()
  assert.equal((await slow.waitFor('disconnect')).reasonCode, 0x93)
  await slow.closed()

  // Paho with a window larger than the server's Receive Maximum gets told the same.
  const paho = await runPaho({ port, clientId: id('rm-paho'), maxInflight: 1_000, publish: Array.from({ length: 300 }, (_, i) => ({ topic, payload: `m${i}`, qos: 2 as const })), waitForDisconnect: true, timeout: 10 }).finished
  const disconnected = paho.find((e) => e.event === 'disconnect')
  assert.equal(disconnected?.reasonCode, 0x93, JSON.stringify(paho))
})

test('the raw test client fails on bytes it cannot parse instead of reporting that nothing arrived', async () => {
  // A "broker" that answers CONNECT with a packet of the reserved type 0 [MQTT-2.2.1].
  const server = net.createServer((socket) => socket.once('data', () => socket.write(Buffer.from([0x00, 0x00]))))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = await rawClient((server.address() as net.AddressInfo).port, 4)
  await assert.rejects(client.connect(), /the broker sent bytes mqtt-packet cannot parse .*; bytes: 0000/)
  client.destroy()
  server.close()
})

test('server → client Topic Aliases where the client allows them: the first PUBLISH of a name sets the alias up, later ones carry the alias only; MQTT.js reads the names, Paho and mosquitto_sub (which allow none) get none [5.0 §3.3.2.3.4]', async () => {
  const base = topicOf('alias')
  const send = async (suffixes: string[]): Promise<void> => {
    const pub = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0 })
    for (const [i, suffix] of suffixes.entries()) await pub.publishAsync(`${base}/${suffix}`, `m${i}`, { qos: 1 })
    await pub.endAsync()
  }

  // On the wire: two aliases allowed.
  const raw = await rawConnect(port, { clientId: id('alias-raw'), properties: { topicAliasMaximum: 2 } })
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${base}/#`, qos: 0 }] })
  await raw.waitFor((p) => p.cmd === 'suback')
  // libmosquitto (2.0.11) cannot take aliases: without Topic Alias Maximum it gets none. (With
  // `-D connect topic-alias-maximum N` it announces them anyway and fails on the first PUBLISH
  // that carries an alias only.)
  const mosq = run('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-t', `${base}/#`, '-C', '5', '-v'])
  const js = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, properties: { topicAliasMaximum: 10 } })
  await js.subscribeAsync(`${base}/#`, { qos: 1 })
  const jsTopics: string[] = []
  const jsAliases: (number | undefined)[] = []
  js.on('message', (topic, _p, packet) => { jsTopics.push(topic); jsAliases.push(packet.properties?.topicAlias) })
  const paho = runPaho({ port, clientId: id('alias-paho'), subscribe: [[`${base}/#`, 0]], expect: 5, timeout: 15 })
  await paho.waitFor((e) => e.event === 'subscribed')
  await sleep(1_000) // mosquitto_sub subscribed too

  await send(['a', 'a', 'b', 'c', 'a'])
  const publishes = async (): Promise<IPublishPacket[]> => {
    await raw.waitFor((p) => p.cmd === 'publish' && (p as IPublishPacket).payload.toString() === 'm4')
    return raw.packets.filter((p): p is IPublishPacket => p.cmd === 'publish')
  }
  assert.deepEqual((await publishes()).map((p) => [p.topic, p.properties?.topicAlias]), [
    [`${base}/a`, 1], ['', 1], [`${base}/b`, 2], [`${base}/c`, undefined], ['', 1],
  ])
  raw.destroy()

  const mosqOut = await mosq
  assert.equal(mosqOut.code, 0, mosqOut.stderr)
  assert.deepEqual(mosqOut.stdout.trim().split('\n'), ['a m0', 'a m1', 'b m2', 'c m3', 'a m4'].map((l) => `${base}/${l}`))
  while (jsTopics.length < 5) await sleep(50)
  assert.deepEqual(jsTopics, ['a', 'a', 'b', 'c', 'a'].map((s) => `${base}/${s}`))
  assert.ok(jsAliases.some((a) => a !== undefined), 'MQTT.js was sent aliases')
  await js.endAsync()
  const pahoEvents = await paho.finished
  const pahoMessages = pahoEvents.filter((e) => e.event === 'message')
  assert.deepEqual(pahoMessages.map((m) => m.topic), ['a', 'a', 'b', 'c', 'a'].map((s) => `${base}/${s}`))
  assert.ok(pahoMessages.every((m) => m.properties?.TopicAlias === undefined))
})
