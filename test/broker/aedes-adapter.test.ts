import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { Aedes } from 'aedes'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import {
  BROKER_MEMBERS, BufferList, CLIENT_MEMBERS, MqttPacketClass, PARSER_MEMBERS, PERSISTENCE_MEMBERS, PINNED_VERSIONS,
  checkPinnedVersions, clientsOf, emitterOf, installedVersion, internals, packageFolder,
} from '../../broker/core/aedes-adapter.js'

/*
 * The adapter (broker/core/aedes-adapter.ts) is the only place FleetMQ reaches into aedes,
 * mqtt-packet and mqemitter, and it is right for exactly one version of each. This test fails on
 * any change there, so that an upgrade starts with the list of what to review instead of a
 * broker that misbehaves quietly: the versions, the source of every file whose private functions
 * FleetMQ replicates or relies on, and the shape of every private member the adapter declares, on
 * a live broker and connection.
 */

const REVIEW = 'review broker/core/aedes-adapter.ts and every module docs/architecture.md lists for it, then update this test'

test('aedes, mqtt-packet and mqemitter are the exact versions the adapter is written for', () => {
  // Written out here as well: changing the pin in the adapter alone does not pass.
  assert.deepEqual({ ...PINNED_VERSIONS }, { aedes: '2.0.0-beta.1', 'mqtt-packet': '9.0.2', mqemitter: '7.1.0' })
  for (const name of Object.keys(PINNED_VERSIONS) as (keyof typeof PINNED_VERSIONS)[]) {
    assert.equal(installedVersion(name), PINNED_VERSIONS[name], `${name} ${installedVersion(name)} is installed: ${REVIEW}`)
  }
  assert.doesNotThrow(checkPinnedVersions)
})

/** SHA-256 of each source file whose private functions FleetMQ replicates or relies on (docs/architecture.md). */
const RELIED_ON_SOURCES: Record<keyof typeof PINNED_VERSIONS, Record<string, string>> = {
  aedes: {
    'aedes.js': 'a8c50472ea1475840ba51020dd78caac39ec6f2057b35d5dd560cab4081eae05',
    'lib/client.js': 'a34d56d7022f6b01f681a688b7c94434e495b87ed4bc4f82d9d6cf2495272c24',
    'lib/write.js': '05a99132d11885904667e94b832e97b3c17d135effdd1a8675f8b9e352920b27',
    'lib/qos-packet.js': '2b35fa5bc73ded5b9415dd11b36e97f596e882c0fbbc8dde47a98f86748c2997',
    'lib/handlers/index.js': '1e574ef4f7034fa6bfd2d1b8c4f217a86dbc0a205dc516c1a5eecc04c8ae2226',
    'lib/handlers/connect.js': '291fb789e7e0006259748b4e679166bd127aa16bae6af701038c74bd08144557',
    'lib/handlers/publish.js': '6d3a8b4b244656db290b9d26dfa09dc51791bc2a6f0659c0f1c491680798bbcc',
    'lib/handlers/puback.js': 'cdcebc4443ef0d933c39a2d6e8d577ee88eb3b78808e37f788cd376fa0f68eee',
    'lib/handlers/pubrec.js': '3fa40b0a46214a664b5f72ede2617f351d3c1695db52ea6998b2da4ad64cb2fa',
    'lib/handlers/pubrel.js': '9e4e4dfad59ac7a3a1b286afd62a723b1d4e246517ce96b85684430d2ac8aaeb',
    'lib/handlers/subscribe.js': 'b4a2894014e6e53df4b411eefd55f721dfa85815d6420eab6b723f358f8ca1ac',
  },
  'mqtt-packet': {
    'mqtt.js': '2163f3f55f248e8eacc99803bc269889d9bfe842d36a5f131bda264507a92b3d',
    'parser.js': 'bde1d714e10bf2f3a087c3a49587a67c4885fb89060e0892f62ef042d4769d65',
    'writeToStream.js': '7ae2dd586fa9b1114155dfa7b24ace389b9e5b11a3bdc415b44de974351101b6',
    'packet.js': 'c46ee790f5ed7c9713dbfbdbf5f5010e6bd7404120371eef2cb9bc16d94c9fc7',
  },
  mqemitter: {
    'mqemitter.js': 'e74a40fd8fab6cfe4bcc0d91d68b90991061768986ad49d4010ee9f586f13601',
  },
}

test('the source files the adapter relies on are byte for byte the reviewed ones', () => {
  const changed: string[] = []
  for (const [name, files] of Object.entries(RELIED_ON_SOURCES) as [keyof typeof PINNED_VERSIONS, Record<string, string>][]) {
    for (const [file, expected] of Object.entries(files)) {
      const actual = createHash('sha256').update(readFileSync(join(packageFolder(name), file))).digest('hex')
      if (actual !== expected) changed.push(`${name}/${file}`)
    }
  }
  assert.deepEqual(changed, [], `changed since the adapter was reviewed: ${changed.join(', ')}: ${REVIEW}`)
})

/** Names whose run-time type differs from the declared one (`null` counts as 'object'). */
function wrongMembers(target: object, members: Readonly<Record<string, string>>): string[] {
  return Object.entries(members)
    .filter(([name, type]) => typeof (target as Record<string, unknown>)[name] !== type)
    .map(([name, type]) => `${name}: ${type} expected, ${typeof (target as Record<string, unknown>)[name]} found`)
}

test('every private member the adapter declares exists with its type on a live aedes broker and 5.0 connection', async () => {
  const broker = await Aedes.createBroker()
  const server = net.createServer((socket) => broker.handle(socket))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const clientId = `adapter-${process.pid}`
  const client = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, clientId, reconnectPeriod: 0 })
  try {
    await client.subscribeAsync('adapter/#', { qos: 1 })
    const connected = clientsOf(broker)[clientId]
    assert.ok(connected, `aedes' clients map has no ${clientId}: ${REVIEW}`)
    const c = internals(connected)
    assert.deepEqual(wrongMembers(c, CLIENT_MEMBERS), [], `aedes Client: ${REVIEW}`)
    assert.deepEqual(wrongMembers(c.broker, BROKER_MEMBERS), [], `aedes broker: ${REVIEW}`)
    assert.deepEqual(PERSISTENCE_MEMBERS.filter((name) => typeof c.broker.persistence[name] !== 'function'), [], `aedes persistence: ${REVIEW}`)
    assert.equal(c._wireVersion, 5)
    assert.equal(c.connackSent, true)
    assert.equal(c._parser._queue, null, 'the pre-CONNACK queue is null once connected')
    assert.ok(c._nextId >= 1 && c._nextId <= 65_535)
    assert.equal(c.subscriptions['adapter/#']?.qos, 1, 'granted subscriptions by filter')
    assert.deepEqual(wrongMembers(c._parser, PARSER_MEMBERS), [], `mqtt-packet parser: ${REVIEW}`)

    const emitter = emitterOf(broker)
    assert.equal(typeof emitter._do, 'function', `mqemitter _do: ${REVIEW}`)
    assert.ok(Array.isArray(emitter._messageQueue) && Array.isArray(emitter._messageCallbacks), `mqemitter queue arrays: ${REVIEW}`)
  } finally {
    await client.endAsync()
    await new Promise<void>((resolve) => broker.close(() => resolve()))
    server.close()
  }
})

test('mqtt-packet: the codec functions aedes looks up on the module object, its packet class and its byte list', () => {
  const codec = mqttPacket as unknown as Record<string, unknown>
  assert.equal(typeof codec.parser, 'function')
  assert.equal(typeof codec.writeToStream, 'function')
  const packet = new MqttPacketClass()
  assert.deepEqual(Object.keys(packet).sort(), ['cmd', 'dup', 'length', 'payload', 'qos', 'retain', 'topic'], `mqtt-packet Packet fields: ${REVIEW}`)
  const list = new BufferList() as { append(b: Buffer): unknown; consume(n: number): unknown; length: number }
  list.append(Buffer.from([1, 2, 3]))
  list.consume(1)
  assert.equal(list.length, 2, `bl BufferList: ${REVIEW}`)
})
