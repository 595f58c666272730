import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Aedes, AedesPublishPacket, Client } from 'aedes'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { FleetmqError } from '../errors.js'

/*
 * The one seam between FleetMQ and the private parts of aedes, of mqtt-packet (the codec aedes
 * reads and writes with) and of mqemitter (aedes' router). Everything FleetMQ touches there that
 * the packages do not export or declare in their types is reached through this module, and only
 * this one: fields of aedes' Client and broker, its private write(), the codec functions aedes
 * looks up on the mqtt-packet module object at call time, the parser's internals, the emitter's
 * queue. docs/architecture.md lists every use and the plan to shrink this list.
 *
 * Each of these is correct for exactly the versions below. `test/broker/aedes-adapter.test.ts`
 * fails on any other version, on a changed shape of a member listed here (checked on a live broker
 * and connection), and on a changed source file whose private functions FleetMQ replicates or
 * relies on: an upgrade starts from that test's list. The node also refuses to start with other
 * versions (`checkPinnedVersions`), naming this file.
 */

/** The exact versions this adapter is written against. */
export const PINNED_VERSIONS = Object.freeze({ aedes: '2.0.0-beta.1', 'mqtt-packet': '9.0.2', mqemitter: '7.1.0' })

const requireHere = createRequire(import.meta.url)
/** aedes' own resolution: the mqemitter and mqtt-packet it runs with are the ones that matter. */
const requireFromAedes = createRequire(requireHere.resolve('aedes'))

/** The package folder of a module as `require` resolves it (exports maps hide package.json). */
export function packageFolder(name: keyof typeof PINNED_VERSIONS): string {
  let dir = dirname(name === 'aedes' ? requireHere.resolve('aedes') : requireFromAedes.resolve(name))
  for (;;) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string }
      if (manifest.name === name) return dir
    } catch { /* not a package root: go up */ }
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`no package.json of ${name} above ${dirname(requireHere.resolve(name))}`)
    dir = parent
  }
}

export function installedVersion(name: keyof typeof PINNED_VERSIONS): string {
  return (JSON.parse(readFileSync(join(packageFolder(name), 'package.json'), 'utf8')) as { version: string }).version
}

/** Throws, naming this adapter, when an installed aedes, mqtt-packet or mqemitter is not the pinned one. */
export function checkPinnedVersions(): void {
  const wrong = (Object.keys(PINNED_VERSIONS) as (keyof typeof PINNED_VERSIONS)[])
    .map((name) => ({ name, installed: installedVersion(name), pinned: PINNED_VERSIONS[name] }))
    .filter(({ installed, pinned }) => installed !== pinned)
  if (wrong.length > 0) {
    throw new FleetmqError('DEPENDENCY_VERSION',
      `${wrong.map((w) => `${w.name} ${w.installed} is installed, the broker is written for ${w.pinned}`).join('; ')}: ` +
      'install the pinned versions (npm ci), or review broker/core/aedes-adapter.ts and its test for the new ones')
  }
}

// ---------------------------------------------------------------------------------------------
// aedes: the broker and its clients

/** A persistence as aedes 2.0.0-beta.1 calls it (aedes-persistence's interface, beyond the types). */
export interface AedesPersistence {
  outgoingEnqueue(sub: { clientId: string }, packet: AedesPublishPacket): Promise<void>
  outgoingUpdate(client: Client, packet: AedesPublishPacket): Promise<unknown>
  outgoingClearMessageId(client: Client, packet: { messageId?: number }): Promise<unknown>
  outgoingStream(client: Client): NodeJS.ReadableStream
  createRetainedStreamCombi(patterns: string[]): NodeJS.ReadableStream
  /** An empty payload deletes the topic's retained message (the management API's delete). */
  storeRetained(packet: AedesPublishPacket): Promise<void>
}

type Done = (err?: Error | null) => void

/** The run-time parts of an aedes 2.0.0-beta.1 broker beyond its type declarations (aedes.js). */
export interface AedesBroker extends Aedes {
  /** Counter aedes stamps on every packet it routes (with its id: the de-duplication key). */
  counter: number
  readonly persistence: AedesPersistence
  /** The router (mqemitter, or the cluster's fan-out built on it). */
  readonly mq: object
  /** Connected clients by client id. */
  readonly clients: Record<string, Client>
  readonly maxTopicLevels: number
  /** 0: no limit. */
  readonly maximumPacketSize: number
  /** Cancels this node's session-expiry timer for a client id (aedes.js). */
  clearSessionExpiry(clientId: string): void
  /** Cancels this node's will-delay timer for a client id (aedes.js). */
  clearDelayedWill(clientId: string): void
}

/** The run-time parts of an aedes 2.0.0-beta.1 client beyond its type declarations (lib/client.js, lib/handlers/connect.js). */
export interface AedesClient extends Client {
  readonly broker: AedesBroker
  /** Granted subscriptions by topic filter. */
  readonly subscriptions: Record<string, { qos: number }>
  /** [MQTT-3.1.2-29] false when the client asked for no Reason Strings / User Properties. */
  readonly _requestProblemInformation?: boolean
  /** The CONNECT's Clean Start flag [MQTT-3.1.2-4] (`clean` is whether the session outlives the connection). */
  readonly _cleanStart?: boolean
  /** Per publishing node id, the highest message counter delivered (lib/client.js `dedupe`). */
  readonly duplicates: Record<string, number>
  /** True once aedes wrote the CONNACK; before it, packets that follow the CONNECT wait in a queue. */
  readonly connackSent?: boolean
  /** Cleared before a close so that nothing aedes was about to send follows a DISCONNECT. */
  connected: boolean
  readonly connecting: boolean
  readonly errored: boolean
  /** The DISCONNECT reason code the connection ended with, for its log line. */
  disconnectReasonCode: number | null
  /**
   * [MQTT-3.2.2-21] Server Keep Alive: set before the CONNECT is handled, aedes sends it in the
   * CONNACK and times the connection by it (lib/handlers/connect.js setKeepAlive, doConnack).
   */
  _serverKeepAlive?: number
  /** Next packet identifier aedes hands out on this connection (1…65535). */
  _nextId: number
  /** The protocol version aedes writes with (set at CONNECT). */
  readonly _wireVersion: number | null
  /** The connection's mqtt-packet parser; `_queue` holds packets that came before the CONNACK (null after). */
  readonly _parser: NodeJS.EventEmitter & { _queue: unknown[] | null }
  readonly _keepaliveInterval: number
  readonly _keepaliveTimer: { refresh(): void } | null
  /** Packets of the current read still being handled; the next read waits until it is 0. */
  _parsingBatch: number
  _nextBatch(err?: Error | null): void
  waitForDrain(done: Done): void
  /** aedes' per-client delivery functions, used by its subscriptions. */
  deliver0(packet: AedesPublishPacket, done: () => void): void
  deliverQoS(packet: AedesPublishPacket, done: () => void): void
}

export const internals = (client: Client): AedesClient => client as AedesClient
export const brokerInternals = (broker: Aedes): AedesBroker => broker as AedesBroker

/** The next packet identifier of this connection, taken the way aedes' QoSPacket takes it. */
export function nextPacketId(client: AedesClient): number {
  const messageId = client._nextId
  client._nextId = messageId >= 65_535 ? 1 : messageId + 1
  return messageId
}

/** The members above, with the type each has on a connected client and on a broker: what the adapter's test checks. */
export const CLIENT_MEMBERS: Readonly<Record<string, string>> = Object.freeze({
  broker: 'object', subscriptions: 'object', _requestProblemInformation: 'boolean', _cleanStart: 'boolean',
  duplicates: 'object', connackSent: 'boolean', connected: 'boolean', connecting: 'boolean', errored: 'boolean',
  disconnectReasonCode: 'object', _nextId: 'number', _wireVersion: 'number', _parser: 'object',
  _keepaliveInterval: 'number', _keepaliveTimer: 'object', _parsingBatch: 'number', _nextBatch: 'function',
  waitForDrain: 'function', deliver0: 'function', deliverQoS: 'function', conn: 'object',
})
export const BROKER_MEMBERS: Readonly<Record<string, string>> = Object.freeze({
  counter: 'number', persistence: 'object', mq: 'object', clients: 'object', maxTopicLevels: 'number',
  maximumPacketSize: 'number', publish: 'function', id: 'string', clearSessionExpiry: 'function', clearDelayedWill: 'function',
})
export const PERSISTENCE_MEMBERS: readonly (keyof AedesPersistence)[] = Object.freeze(['outgoingEnqueue', 'outgoingUpdate', 'outgoingClearMessageId', 'outgoingStream', 'createRetainedStreamCombi', 'storeRetained'])

type Publish = (packet: AedesPublishPacket, client: Client | null, done?: Done) => void

/**
 * Replaces the broker's `publish` (aedes calls it, for a client's PUBLISH, right after its PUBACK)
 * with `wrap(original)`; returns the function that puts the original back.
 */
export function wrapBrokerPublish(broker: Aedes, wrap: (original: Publish) => Publish): () => void {
  const target = broker as unknown as { publish: Publish }
  const original = target.publish
  const bound: Publish = (packet, client, done) => original.call(broker, packet, client, done)
  target.publish = wrap(bound)
  return () => { target.publish = original }
}

/** The broker's `publish` as it is now (after any wrapper), for a PUBLISH handled in aedes' place. */
export function brokerPublish(broker: Aedes): Publish {
  const target = broker as unknown as { publish: Publish }
  return (packet, client, done) => target.publish(packet, client, done)
}

/** Replaces one method of the broker's persistence (aedes calls it through `broker.persistence`) with `wrap(original)`. */
export function wrapPersistenceMethod<K extends 'outgoingStream' | 'createRetainedStreamCombi'>(
  broker: Aedes, method: K, wrap: (original: AedesPersistence[K]) => AedesPersistence[K],
): void {
  const persistence = brokerInternals(broker).persistence
  const original = (persistence[method] as (...args: never[]) => unknown).bind(persistence) as AedesPersistence[K]
  ;(persistence as unknown as Record<string, unknown>)[method] = wrap(original)
}

/** aedes' private write() (lib/write.js): serialize with the connection's version, call back after a turn or once drained. */
const WRITE_OPTIONS: Record<number, { protocolVersion: number }> = {
  3: Object.freeze({ protocolVersion: 3 }),
  4: Object.freeze({ protocolVersion: 4 }),
  5: Object.freeze({ protocolVersion: 5 }),
}

export function writeLikeAedes(client: Client, packet: Packet, done: Done): void {
  const c = internals(client)
  if (!c.connecting && !c.connected) {
    setImmediate(done, new Error('connection closed'))
    return
  }
  let written: boolean
  try {
    // Looked up at call time: the wire layer replaces writeToStream on the module object.
    written = codecModule().writeToStream(packet, c.conn as NodeJS.WritableStream, WRITE_OPTIONS[c._wireVersion ?? 4] ?? WRITE_OPTIONS[4])
  } catch (err) {
    setImmediate(done, new Error('packet received not valid', { cause: err }))
    return
  }
  if (!written && !c.errored) c.waitForDrain(done)
  else setImmediate(done, null)
}

// ---------------------------------------------------------------------------------------------
// mqtt-packet: the codec aedes looks up on the module object at call time

export type WriteToStream = (packet: Packet, stream: NodeJS.WritableStream, opts?: object) => boolean
export type ParserFactory = typeof mqttPacket.parser

interface CodecModule {
  parser: ParserFactory
  writeToStream: WriteToStream
}

const codecModule = (): CodecModule => mqttPacket as unknown as CodecModule

/** The parser's internals the wire layer reads (mqtt-packet parser.js). */
export interface ParserInternals {
  client?: Client
  settings: { protocolVersion?: number }
  _list: { length: number }
  _stateCounter: number
  error: Error | null
  parse(buf: Buffer): number
  emit(event: 'packet', packet: Packet): boolean
  on(event: 'packet', listener: (packet: Packet) => void): unknown
}

export const PARSER_MEMBERS: Readonly<Record<string, string>> = Object.freeze({
  settings: 'object', _list: 'object', _stateCounter: 'number', error: 'object', parse: 'function',
})

/**
 * Replaces mqtt-packet's `parser` and `writeToStream` on its module object, where aedes finds them
 * (lib/client.js, lib/write.js): `parser` with `wrapParser` applied to each new parser, and
 * `writeToStream` with `write`. Returns the originals.
 */
export function replaceCodec(wrapParser: (parser: ParserInternals) => void, write: (original: WriteToStream) => WriteToStream): { original: { parser: ParserFactory; writeToStream: WriteToStream } } {
  const target = codecModule()
  const original = { parser: target.parser, writeToStream: target.writeToStream }
  target.parser = function wrappedParser(...args: Parameters<ParserFactory>) {
    const parser = original.parser(...args)
    wrapParser(parser as unknown as ParserInternals)
    return parser
  } as ParserFactory
  target.writeToStream = write(original.writeToStream)
  return { original }
}

/** mqtt-packet's packet class: packets built by the lean parser get the same shape (and hidden class) as its own. */
export const MqttPacketClass = createRequire(requireFromAedes.resolve('mqtt-packet'))('./packet.js') as new () => Packet & Record<string, unknown>

/**
 * The `bl` BufferList that mqtt-packet's parser keeps its bytes in: the plain list, without the
 * Duplex stream the parser creates (the parser uses only the list's methods).
 */
export const BufferList = createRequire(requireFromAedes.resolve('mqtt-packet'))('bl/BufferList.js') as new () => object

// ---------------------------------------------------------------------------------------------
// mqemitter: aedes' router

/** The emitter's queue internals (mqemitter.js): `_do` runs one message, the two arrays hold the waiting ones. */
export interface EmitterInternals {
  _do?: (this: unknown, message: unknown, callback: unknown) => unknown
  _messageQueue?: unknown
  _messageCallbacks?: unknown
  _fleetmqGuarded?: boolean
}

export const emitterOf = (broker: Aedes): EmitterInternals => brokerInternals(broker).mq as EmitterInternals
export const emitterInternals = (mq: object): EmitterInternals => mq as EmitterInternals

/** Connected clients of the broker, by client id. */
export const clientsOf = (broker: Aedes): Record<string, Client> => brokerInternals(broker).clients
