import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { hostname } from 'node:os'
import { deserialize, serialize } from 'node:v8'
import type { Redis } from 'ioredis'

/*
 * Cross-node fan-out: the message emitter aedes gets in a cluster (in place of mqemitter-redis).
 *
 * mqemitter-redis publishes every message on its own Redis channel (the MQTT topic) and lets Redis
 * route it by pattern; every message then costs one Redis command on the way out, one pub/sub
 * frame and a msgpack decode on the way in, and even a subscriber on the publisher's own node gets
 * it only after a Redis round trip. Measured (docs/bench.md, cross-node): 40–70 µs of broker CPU
 * per message against 9 µs for a single node. Here instead:
 *
 * - A route table: each node keeps the topic filters its clients subscribe to in Redis
 *   (`fleetmq:<cluster>:fanout-routes:<node>`), announces changes on `fleetmq:<cluster>:fanout-events`,
 *   and every node caches every other node's filters in a trie. A message goes only to the nodes
 *   with a matching filter; a subscriber on the publisher's node gets it without Redis.
 * - Batches: the messages for one node emitted in one event-loop turn travel as one PUBLISH on
 *   that node's channel (`fleetmq:<cluster>:fanout:<node>`), in a compact binary frame.
 * - A new filter is acknowledged by every node subscribed to the events channel (PUBLISH returns
 *   how many) before aedes sends SUBACK, so a message published anywhere after the SUBACK reaches
 *   the new subscriber, as Redis' own routing guaranteed (up to `ACK_TIMEOUT_MS` for a stuck node).
 * - After each (re)connection of the subscriber connection a node re-writes its whole route set and
 *   announces it (`reset`), then reloads everyone else's: a Redis that lost data, a failover or a
 *   missed event heal there.
 * - A node whose channel has no subscriber for two checks (`heartbeatInterval` apart) is left out
 *   of the table until it shows up again; after an hour its routes are deleted from Redis.
 *
 * Messages for one node keep their order (one connection out, one in). Delivery is what pub/sub
 * gives: at most once per node; QoS 1/2 durability comes from the sessions in Redis, as before.
 *
 * Backpressure (issue 16): a node whose subscribers have more waiting than it bounds (the backend
 * decides, `setCongested`) says so on the events channel, and repeats it every
 * `PRESSURE_REPEAT_MS` while it lasts. Every node then holds the messages bound for it — and, on
 * the congested node itself, every message its own clients publish — instead of routing them:
 * their `done` waits, so aedes reads no more from those publishers' sockets and sends no PUBACK
 * (mqtt/puback-order.ts) until the congestion clears. A PUBACK thus never runs ahead of what the
 * cluster delivers. A report not repeated within `PRESSURE_TTL_MS` has expired (its node died, or
 * its "clear" was lost). Held messages keep their order; held QoS 0 messages are dropped (and
 * counted) only once nothing was released for `dropQos0AfterMs`: sustained overload, not a burst.
 */

const require = createRequire(import.meta.url)

type Done = (err?: Error | null) => void
export interface Message {
  topic: string
  payload: Buffer | string
  qos?: number
  [key: string]: unknown
}
type Listener = (message: Message, done: () => void) => void

interface MQEmitterBase {
  closed: boolean
  on(topic: string, listener: Listener, done?: () => void): this
  removeListener(topic: string, listener: Listener, done?: () => void): this
  emit(message: Message, done?: Done, acked?: Done): this
  close(done: () => void): this
}
const MQEmitter = require('mqemitter') as new (opts: object) => MQEmitterBase
const { QlobberDedup } = require('qlobber') as {
  QlobberDedup: new (opts: object) => { add(topic: string, value: string): void; remove(topic: string, value?: string): void; match(topic: string): Set<string> }
}
// The MQTT matching rules mqemitter uses (aedes filters `$` topics from `#` and `+` on delivery).
const TRIE_OPTIONS = { separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true }

/** How long SUBACK waits for the other nodes to acknowledge a new filter. */
const ACK_TIMEOUT_MS = 2_000
/** A batch is sent as soon as it holds this many bytes, without waiting for the end of the turn. */
const MAX_BATCH_BYTES = 256 * 1024
/** Routes of a node gone this long are deleted from Redis. */
const FORGET_AFTER_MS = 3_600_000
/** A congested node repeats its report this often; a report not repeated within the TTL expires. */
const PRESSURE_REPEAT_MS = 100
const PRESSURE_TTL_MS = 1_000
/** While messages are held: how often expired reports are looked for. */
const HOLD_RECHECK_MS = 50

const FRAME_MESSAGES = 1
const FRAME_ACK = 2

// Message flags (one byte).
const QOS_MASK = 0b11
const RETAIN = 1 << 2
const DUP = 1 << 3
const PAYLOAD_STRING = 1 << 4
const HAS_CLIENT_ID = 1 << 5
const HAS_EXTRA = 1 << 6
const HAS_BROKER = 1 << 7

/** Fields the binary layout carries itself; anything else (MQTT 5 properties, expiry, …) travels v8-serialized. */
const KNOWN = new Set(['cmd', 'brokerId', 'brokerCounter', 'topic', 'payload', 'qos', 'retain', 'dup', 'messageId', 'clientId'])

/**
 * One message as `[u32 length][flags][u16 topic][topic][u16 broker id][broker id][f64 counter]
 * [u16 client id][client id][u32 payload][payload][u32 extra][extra]`, optional parts per flags.
 */
export function encodeMessage(message: Message): Buffer {
  const m = message as Record<string, unknown>
  let extra: Record<string, unknown> | undefined
  for (const key in m) {
    if (!KNOWN.has(key) && m[key] !== undefined) (extra ??= {})[key] = m[key]
  }
  if (m.cmd !== undefined && m.cmd !== 'publish') (extra ??= {}).cmd = m.cmd
  const qos = m.qos ?? 0
  if (qos !== 0 && qos !== 1 && qos !== 2) (extra ??= {}).qos = qos
  const hasBroker = typeof m.brokerId === 'string' && typeof m.brokerCounter === 'number'
  if (!hasBroker && m.brokerId !== undefined) (extra ??= {}).brokerId = m.brokerId
  if (!hasBroker && m.brokerCounter !== undefined) (extra ??= {}).brokerCounter = m.brokerCounter
  const hasClientId = typeof m.clientId === 'string'
  if (!hasClientId && m.clientId !== undefined) (extra ??= {}).clientId = m.clientId
  const payload = m.payload
  const payloadIsString = typeof payload === 'string'
  if (payload !== undefined && !payloadIsString && !Buffer.isBuffer(payload)) (extra ??= {}).payload = payload
  const payloadBuf = payloadIsString ? Buffer.from(payload) : Buffer.isBuffer(payload) ? payload : undefined
  const extraBuf = extra ? serialize(extra) : undefined

  const topicLen = Buffer.byteLength(message.topic)
  const brokerLen = hasBroker ? Buffer.byteLength(m.brokerId as string) : 0
  const clientLen = hasClientId ? Buffer.byteLength(m.clientId as string) : 0
  const payloadLen = payloadBuf?.length ?? 0
  const size = 4 + 1 + 2 + topicLen + (hasBroker ? 2 + brokerLen + 8 : 0) + (hasClientId ? 2 + clientLen : 0) + 4 + payloadLen + (extraBuf ? 4 + extraBuf.length : 0)
  const buf = Buffer.allocUnsafe(size)
  let flags = typeof qos === 'number' && qos <= 2 ? qos : 0
  if (m.retain === true) flags |= RETAIN
  if (m.dup === true) flags |= DUP
  if (payloadIsString) flags |= PAYLOAD_STRING
  if (hasClientId) flags |= HAS_CLIENT_ID
  if (extraBuf) flags |= HAS_EXTRA
  if (hasBroker) flags |= HAS_BROKER
  let at = buf.writeUInt32BE(size - 4, 0)
  at = buf.writeUInt8(flags, at)
  at = buf.writeUInt16BE(topicLen, at)
  at += buf.write(message.topic, at)
  if (hasBroker) {
    at = buf.writeUInt16BE(brokerLen, at)
    at += buf.write(m.brokerId as string, at)
    at = buf.writeDoubleBE(m.brokerCounter as number, at)
  }
  if (hasClientId) {
    at = buf.writeUInt16BE(clientLen, at)
    at += buf.write(m.clientId as string, at)
  }
  at = buf.writeUInt32BE(payloadLen, at)
  if (payloadBuf) at += payloadBuf.copy(buf, at)
  if (extraBuf) {
    at = buf.writeUInt32BE(extraBuf.length, at)
    extraBuf.copy(buf, at)
  }
  return buf
}

const EMPTY = Buffer.alloc(0)

/** The messages of a FRAME_MESSAGES frame, in order. */
export function decodeMessages(frame: Buffer, each: (message: Message) => void): void {
  let at = 1
  while (at < frame.length) {
    const end = at + 4 + frame.readUInt32BE(at)
    at += 4
    const flags = frame[at++]
    const topicLen = frame.readUInt16BE(at)
    at += 2
    const topic = frame.toString('utf8', at, (at += topicLen))
    const qos = flags & QOS_MASK
    const message: Message = { cmd: 'publish', topic, payload: EMPTY, qos, retain: (flags & RETAIN) !== 0, dup: (flags & DUP) !== 0 }
    if (flags & HAS_BROKER) {
      const len = frame.readUInt16BE(at)
      at += 2
      message.brokerId = frame.toString('utf8', at, (at += len))
      message.brokerCounter = frame.readDoubleBE(at)
      at += 8
    }
    if (flags & HAS_CLIENT_ID) {
      const len = frame.readUInt16BE(at)
      at += 2
      message.clientId = frame.toString('utf8', at, (at += len))
    }
    const payloadLen = frame.readUInt32BE(at)
    at += 4
    // A copy: the frame is shared by every message in it, and a queued message outlives it.
    message.payload = flags & PAYLOAD_STRING ? frame.toString('utf8', at, at + payloadLen) : Buffer.from(frame.subarray(at, at + payloadLen))
    at += payloadLen
    // aedes' Packet: a QoS > 0 message has its packet id assigned per subscriber.
    if (qos > 0) message.messageId = undefined
    if (flags & HAS_EXTRA) {
      const len = frame.readUInt32BE(at)
      at += 4
      Object.assign(message, deserialize(frame.subarray(at, at + len)))
    }
    at = end
    each(message)
  }
}

interface Batch {
  parts: Buffer[]
  bytes: number
  callbacks: Done[]
}

interface RouteEvent {
  readonly node: string
  readonly seq: number
  readonly reset?: boolean
  readonly add?: readonly string[]
  readonly del?: readonly string[]
  /** A backpressure report (no route change): the node's subscribers are behind, or caught up. */
  readonly congested?: boolean
}

interface Held {
  readonly message: Message
  readonly done: Done
  readonly acked: Done
}

/** What the fan-out does under overload; the backend gives it. */
export interface OverloadPolicy {
  /** A QoS 0 message held this long (ms, continuously) is dropped instead of held. */
  readonly dropQos0AfterMs: number
  /** Called for each message dropped that way. */
  onDrop(message: Message): void
}

export interface FanoutOptions {
  /** Commands (routes, batches); its `status` says whether Redis is reachable. */
  readonly pub: Redis
  /** Subscriber connection (this node's channel and the events channel). */
  readonly sub: Redis
  readonly cluster: string
  /** Seconds between checks for nodes that are gone. */
  readonly heartbeatInterval: number
  readonly onError: (err: Error) => void
  readonly debug: (message: string, fields?: Record<string, unknown>) => void
  readonly overload: OverloadPolicy
}

export interface FanoutStatus {
  /** This process's route id. */
  readonly node: string
  /** Other nodes with routes in the table. */
  readonly nodes: number
  /** Messages sent to other nodes, and batches (PUBLISH commands) they travelled in. */
  readonly messagesOut: number
  readonly batchesOut: number
  readonly messagesIn: number
  /** Messages held because this node or one they are bound for is congested (backpressure). */
  readonly held: number
  /** Other nodes that report themselves congested. */
  readonly congestedNodes: number
  /** This node reports itself congested. */
  readonly congested: boolean
}

const noop = (): void => undefined

export class Fanout extends MQEmitter {
  /** Route id of this process: a restarted node is a new route owner. */
  readonly node = `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
  /** Where a message from another node goes; the backend puts its inbound overload policy here. */
  receive: (message: Message) => void = (message) => { this.emitLocal(message) }

  private readonly options: FanoutOptions
  private readonly keys: { events: string; nodes: string; routes: (node: string) => string; channel: (node: string) => string }
  private readonly ownChannel: Buffer
  private readonly eventsChannel: Buffer
  /** Filter → local listener count. */
  private readonly local = new Map<string, number>()
  private readonly table = new QlobberDedup(TRIE_OPTIONS)
  private readonly byNode = new Map<string, Set<string>>()
  private readonly changed = new Map<string, Done[]>()
  private changeScheduled = false
  private batches = new Map<string, Batch>()
  private flushScheduled = false
  private seq = 0
  /**
   * Acknowledgements of announced filters, by event sequence. `received` counts those in before
   * `needed` is known: they travel on the subscriber connection and may beat Redis' reply to the
   * PUBLISH (on the command connection) that tells how many nodes received the event.
   */
  private readonly acks = new Map<number, { received: number; needed: number; done: () => void }>()
  /** Until the first sync, messages wait (the table is empty). */
  private synced = false
  private readonly beforeSync: (() => void)[] = []
  private syncing: Promise<void> | undefined
  /** While a resync loads the table: nodes an event arrived for (newer than the snapshot). */
  private touched: Set<string> | undefined
  private readonly zeroSince = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private counts = { messagesOut: 0, batchesOut: 0, messagesIn: 0 }
  /** Node → until when its congestion report holds (ms since epoch). */
  private readonly congestedUntil = new Map<string, number>()
  private congested = false
  private pressureTimer: NodeJS.Timeout | undefined
  /** Held messages, in order: `held[heldHead]` goes first. */
  private held: Held[] = []
  private heldHead = 0
  private heldSince = 0
  private holdTimer: NodeJS.Timeout | undefined

  constructor(options: FanoutOptions) {
    super({})
    this.options = options
    const prefix = `fleetmq:${options.cluster}:fanout`
    this.keys = {
      events: `${prefix}-events`,
      nodes: `${prefix}-nodes`,
      routes: (node) => `${prefix}-routes:${node}`,
      channel: (node) => `${prefix}:${node}`,
    }
    this.ownChannel = Buffer.from(this.keys.channel(this.node))
    this.eventsChannel = Buffer.from(this.keys.events)
    options.sub.on('messageBuffer', (channel: Buffer, frame: Buffer) => this.onFrame(channel, frame))
    options.sub.on('ready', () => { this.resync() })
    if (options.sub.status === 'ready') this.resync()
    this.timer = setInterval(() => { this.checkNodes().catch((err: Error) => this.options.debug('fan-out node check failed', { err })) }, options.heartbeatInterval * 1000)
    this.timer.unref()
  }

  status(): FanoutStatus {
    const now = Date.now()
    let congestedNodes = 0
    for (const until of this.congestedUntil.values()) if (until > now) congestedNodes++
    return { node: this.node, nodes: this.byNode.size, ...this.counts, held: this.held.length - this.heldHead, congestedNodes, congested: this.congested }
  }

  override on(topic: string, listener: Listener, done?: () => void): this {
    super.on(topic, listener)
    const count = this.local.get(topic) ?? 0
    this.local.set(topic, count + 1)
    if (count === 0) this.routeChanged(topic, done)
    else if (done) setImmediate(done)
    return this
  }

  override removeListener(topic: string, listener: Listener, done?: () => void): this {
    super.removeListener(topic, listener, done)
    const count = (this.local.get(topic) ?? 0) - 1
    if (count > 0) {
      this.local.set(topic, count)
    } else if (this.local.delete(topic)) {
      this.routeChanged(topic)
    }
    return this
  }

  /** This node's subscribers only. */
  emitLocal(message: Message, done?: Done): void {
    super.emit(message, done)
  }

  /**
   * This node's subscribers, and every other node with a matching filter (through Redis).
   *
   * `done` runs once this node's subscribers have it and the copies for other nodes are queued,
   * not when Redis acknowledges them: aedes reads a client's next packet only after `done`
   * (lib/client.js nextBatch), so waiting for Redis cost a Redis round trip between every two reads
   * of the publisher's socket — each one a wake-up of Redis and of this node, the largest share of
   * the cross-node latency tail (docs/cluster.md, "Performance"). The PUBACK of a QoS 1 message
   * waits for `done` (mqtt/puback-order.ts); by then aedes has stored it for every persistent
   * session (`enqueueOffline` runs before this emit), which is what QoS 1 durability rests on; a
   * node killed before its batch reached Redis loses only the copies for clean sessions on other
   * nodes, which a lost connection loses anyway. `acked` runs
   * when Redis has acknowledged every copy (at once without any), with the first error: the
   * backend's overload bound counts messages until then. A copy Redis refused is lost for that
   * node, as a pub/sub message is; the caller counts it through `acked`.
   */
  override emit(message: Message, done: Done = noop, acked: Done = noop): this {
    if (this.closed) {
      const err = new Error('the cluster fan-out is closed')
      done(err)
      acked(err)
      return this
    }
    if (!this.synced) {
      this.beforeSync.push(() => this.emit(message, done, acked))
      return this
    }
    // Behind held messages, or bound for a congested node: held too, in order.
    if (this.heldHead < this.held.length || this.isBlocked(message)) {
      this.hold({ message, done, acked })
      return this
    }
    this.route(message, done, acked)
    return this
  }

  /**
   * Says whether this node's subscribers are over the backend's bound: while they are, the node's
   * own publishers are held and every other node holds what it would send here.
   */
  setCongested(congested: boolean): void {
    if (congested === this.congested || this.closed) return
    this.congested = congested
    this.reportPressure()
    if (congested) {
      this.pressureTimer = setInterval(() => this.reportPressure(), PRESSURE_REPEAT_MS)
      this.pressureTimer.unref()
    } else {
      clearInterval(this.pressureTimer)
      this.pressureTimer = undefined
      this.release()
    }
  }

  private reportPressure(): void {
    const { pub } = this.options
    if (pub.status !== 'ready') return
    const event: RouteEvent = { node: this.node, seq: this.seq, congested: this.congested }
    pub.publish(this.keys.events, JSON.stringify(event)).catch((err: Error) => this.options.debug('fan-out: backpressure report failed', { err }))
  }

  private isBlocked(message: Message): boolean {
    if (this.congested) return true
    if (this.congestedUntil.size === 0) return false
    const now = Date.now()
    for (const node of this.table.match(message.topic)) {
      const until = this.congestedUntil.get(node)
      if (until !== undefined && until > now) return true
    }
    return false
  }

  private hold(held: Held): void {
    if (this.heldHead === this.held.length) {
      this.heldSince = Date.now()
      this.holdTimer ??= setInterval(() => this.release(), HOLD_RECHECK_MS)
      this.holdTimer.unref()
    }
    this.held.push(held)
  }

  /** Held since `dropQos0AfterMs` without a release: sustained overload, the QoS 0 messages go. */
  private dropSustained(): void {
    if (Date.now() - this.heldSince < this.options.overload.dropQos0AfterMs) return
    const kept: Held[] = []
    for (let i = this.heldHead; i < this.held.length; i++) {
      const held = this.held[i]
      if ((held.message.qos ?? 0) !== 0 || held.message.topic.startsWith('$SYS/')) {
        kept.push(held)
        continue
      }
      this.options.overload.onDrop(held.message)
      held.done()
      held.acked()
    }
    this.held = kept
    this.heldHead = 0
  }

  /** Routes the held messages, in order, up to the first one still blocked. */
  private release(): void {
    const now = Date.now()
    for (const [node, until] of this.congestedUntil) if (until <= now) this.congestedUntil.delete(node)
    const before = this.heldHead
    while (this.heldHead < this.held.length) {
      const next = this.held[this.heldHead]
      if (this.isBlocked(next.message)) break
      this.held[this.heldHead++] = undefined as unknown as Held
      this.route(next.message, next.done, next.acked)
    }
    if (this.heldHead > before) this.heldSince = now
    else if (this.heldHead < this.held.length) this.dropSustained()
    if (this.heldHead === this.held.length) {
      this.held = []
      this.heldHead = 0
      clearInterval(this.holdTimer)
      this.holdTimer = undefined
    }
  }

  private route(message: Message, done: Done, acked: Done): void {
    const targets = this.table.match(message.topic)
    targets.delete(this.node)
    if (targets.size === 0) {
      super.emit(message, done)
      acked()
      return
    }
    let remaining = targets.size
    let failure: Error | undefined
    const finish: Done = (err) => {
      if (err) failure ??= err
      if (--remaining === 0) acked(failure)
    }
    super.emit(message, done)
    const encoded = encodeMessage(message)
    for (const node of targets) this.enqueue(node, encoded, finish)
  }

  override close(done: () => void): this {
    if (this.closed) {
      setImmediate(done)
      return this
    }
    clearInterval(this.timer)
    clearInterval(this.pressureTimer)
    clearInterval(this.holdTimer)
    const held = this.held.splice(this.heldHead)
    this.held = []
    this.heldHead = 0
    const err = new Error('the cluster fan-out is closed')
    for (const message of held) {
      message.done(err)
      message.acked(err)
    }
    for (const { done: resolve } of this.acks.values()) resolve()
    this.acks.clear()
    this.flush()
    // Other nodes stop sending here at once rather than after the gone-node check.
    const { pub } = this.options
    const cleanup = pub.status === 'ready'
      ? pub.multi().srem(this.keys.nodes, this.node).del(this.keys.routes(this.node)).exec().then(noop, noop)
      : Promise.resolve()
    const ready = this.beforeSync.splice(0)
    this.synced = true
    for (const run of ready) run()
    void Promise.race([cleanup, new Promise((r) => setTimeout(r, 1_000).unref())]).then(() => super.close(done))
    return this
  }

  private enqueue(node: string, encoded: Buffer, done: Done): void {
    let batch = this.batches.get(node)
    if (!batch) this.batches.set(node, batch = { parts: [Buffer.of(FRAME_MESSAGES)], bytes: 1, callbacks: [] })
    batch.parts.push(encoded)
    batch.bytes += encoded.length
    batch.callbacks.push(done)
    if (batch.bytes >= MAX_BATCH_BYTES) {
      this.batches.delete(node)
      this.send(node, batch)
    } else if (!this.flushScheduled) {
      this.flushScheduled = true
      // setImmediate, not nextTick: the messages of every socket read in this turn join the batch.
      setImmediate(() => this.flush())
    }
  }

  private flush(): void {
    this.flushScheduled = false
    const batches = this.batches
    // A new Map, not clear(): V8's Map.clear() leaves the old hash table pointing to its
    // replacement (for live iterators) and holding its entries. Once one table of that chain is in
    // the old generation, every later batch — and every message and callback it holds — stays
    // reachable from it until the next full collection: with clear() per turn, node A of the bench
    // kept ≈ 3 MB alive through each young collection (5–10 ms pauses), and the collections were
    // most of the cross-node p99. docs/cluster.md, "Performance".
    this.batches = new Map()
    for (const [node, batch] of batches) this.send(node, batch)
  }

  private send(node: string, batch: Batch): void {
    this.counts.batchesOut++
    this.counts.messagesOut += batch.callbacks.length
    const frame = Buffer.concat(batch.parts, batch.bytes)
    this.options.pub.publish(this.keys.channel(node), frame).then(
      () => { for (const cb of batch.callbacks) cb() },
      (err: Error) => { for (const cb of batch.callbacks) cb(err) },
    )
  }

  private onFrame(channel: Buffer, frame: Buffer): void {
    if (channel.equals(this.ownChannel)) {
      if (frame[0] === FRAME_MESSAGES) {
        decodeMessages(frame, (message) => {
          this.counts.messagesIn++
          this.receive(message)
        })
      } else if (frame[0] === FRAME_ACK && frame.length >= 5) {
        const wait = this.acks.get(frame.readUInt32BE(1))
        if (wait && ++wait.received >= wait.needed) wait.done()
      }
    } else if (channel.equals(this.eventsChannel)) {
      let event: RouteEvent
      try {
        event = JSON.parse(frame.toString('utf8')) as RouteEvent
      } catch {
        return
      }
      if (event.node === this.node) return
      if (event.congested !== undefined) {
        if (event.congested) this.congestedUntil.set(event.node, Date.now() + PRESSURE_TTL_MS)
        else if (this.congestedUntil.delete(event.node)) this.release()
        return
      }
      this.apply(event)
      if (event.add?.length) {
        const ack = Buffer.allocUnsafe(5)
        ack[0] = FRAME_ACK
        ack.writeUInt32BE(event.seq >>> 0, 1)
        this.options.pub.publish(this.keys.channel(event.node), ack).catch(this.options.onError)
      }
    }
  }

  private apply(event: RouteEvent): void {
    this.touched?.add(event.node)
    if (event.reset) this.forget(event.node)
    let filters = this.byNode.get(event.node)
    if (!filters) this.byNode.set(event.node, filters = new Set())
    for (const filter of event.add ?? []) {
      if (filters.has(filter)) continue
      filters.add(filter)
      this.table.add(filter, event.node)
    }
    for (const filter of event.del ?? []) {
      if (filters.delete(filter)) this.table.remove(filter, event.node)
    }
  }

  private forget(node: string): void {
    const filters = this.byNode.get(node)
    if (!filters) return
    for (const filter of filters) this.table.remove(filter, node)
    this.byNode.delete(node)
  }

  /** Filters whose local count crossed zero this turn are announced together. */
  private routeChanged(filter: string, done?: () => void): void {
    const callbacks = this.changed.get(filter) ?? []
    if (done) callbacks.push(done)
    this.changed.set(filter, callbacks)
    if (this.changeScheduled) return
    this.changeScheduled = true
    setImmediate(() => {
      this.changeScheduled = false
      const changed = [...this.changed]
      this.changed.clear()
      this.announce(changed).catch(this.options.onError)
    })
  }

  private async announce(changed: [string, Done[]][]): Promise<void> {
    const release = (): void => { for (const [, callbacks] of changed) for (const cb of callbacks) setImmediate(cb) }
    const { pub } = this.options
    // Redis down: local subscribers work now; the routes are written at the resync on reconnect.
    if (pub.status !== 'ready' || this.closed) return release()
    const add = changed.filter(([f]) => this.local.has(f)).map(([f]) => f)
    const del = changed.filter(([f]) => !this.local.has(f)).map(([f]) => f)
    const seq = ++this.seq
    const event: RouteEvent = { node: this.node, seq, ...(add.length ? { add } : {}), ...(del.length ? { del } : {}) }
    // Listening before the event goes out: an acknowledgement can arrive before the reply below.
    const acked = add.length ? this.expectAcks(seq) : undefined
    const tx = pub.multi().sadd(this.keys.nodes, this.node)
    if (add.length) tx.hset(this.keys.routes(this.node), Object.fromEntries(add.map((f) => [f, '1'])))
    if (del.length) tx.hdel(this.keys.routes(this.node), ...del)
    tx.publish(this.keys.events, JSON.stringify(event))
    let receivers = 0
    try {
      const results = await tx.exec()
      receivers = Number(results?.at(-1)?.[1] ?? 0)
    } catch (err) {
      this.options.onError(err as Error)
    }
    // Every other node subscribed to the events channel acknowledges a new filter before SUBACK.
    if (acked) await acked(receivers - 1)
    release()
  }

  /**
   * Starts counting the acknowledgements of event `seq`; the function returned waits until
   * `needed` of them are in (at once when they already are), at most ACK_TIMEOUT_MS.
   */
  private expectAcks(seq: number): (needed: number) => Promise<void> {
    let resolve: () => void = () => {}
    const settled = new Promise<void>((r) => { resolve = r })
    let timer: NodeJS.Timeout | undefined
    const wait = {
      received: 0,
      needed: Number.POSITIVE_INFINITY,
      done: () => {
        clearTimeout(timer)
        this.acks.delete(seq)
        resolve()
      },
    }
    this.acks.set(seq, wait)
    return (needed) => {
      if (!this.acks.has(seq)) return settled // closed meanwhile
      wait.needed = needed
      if (wait.received >= needed) {
        wait.done()
        return settled
      }
      timer = setTimeout(() => {
        this.options.debug('fan-out: not every node acknowledged a new route in time', { seq, missing: wait.needed - wait.received })
        wait.done()
      }, ACK_TIMEOUT_MS)
      timer.unref()
      return settled
    }
  }

  /** After each (re)connection: subscribe, publish this node's routes afresh, reload the others'. */
  private resync(): void {
    if (this.closed) return
    const run = async (): Promise<void> => {
      const { pub, sub } = this.options
      await sub.subscribe(this.keys.channel(this.node), this.keys.events)
      const filters = [...this.local.keys()]
      const tx = pub.multi().del(this.keys.routes(this.node))
      if (filters.length) tx.hset(this.keys.routes(this.node), Object.fromEntries(filters.map((f) => [f, '1'])))
      tx.sadd(this.keys.nodes, this.node)
      tx.publish(this.keys.events, JSON.stringify({ node: this.node, seq: ++this.seq, reset: true, add: filters } satisfies RouteEvent))
      await tx.exec()
      const touched = this.touched = new Set()
      try {
        const nodes = (await pub.smembers(this.keys.nodes)).filter((n) => n !== this.node)
        const loaded = await Promise.all(nodes.map(async (node) => [node, await pub.hkeys(this.keys.routes(node))] as const))
        // Events that arrived while loading were applied already and are newer than the snapshot.
        for (const [node, routes] of loaded) {
          if (!touched.has(node)) this.apply({ node, seq: 0, reset: true, add: routes })
        }
        for (const node of [...this.byNode.keys()]) if (!nodes.includes(node) && !touched.has(node)) this.forget(node)
      } finally {
        this.touched = undefined
      }
    }
    const attempt = run().catch((err: Error) => {
      this.options.onError(err)
    }).finally(() => {
      if (this.syncing === attempt) this.syncing = undefined
      if (!this.synced) {
        this.synced = true
        for (const resume of this.beforeSync.splice(0)) resume()
      }
    })
    this.syncing = attempt
  }

  /** Leaves out of the table the nodes whose channel nobody listens to; brings back those that returned. */
  private async checkNodes(): Promise<void> {
    const { pub } = this.options
    if (pub.status !== 'ready' || this.syncing) return
    const nodes = (await pub.smembers(this.keys.nodes)).filter((n) => n !== this.node)
    if (nodes.length === 0) return
    const reply = await pub.call('PUBSUB', 'NUMSUB', ...nodes.map(this.keys.channel)) as (string | number)[]
    const now = Date.now()
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]
      if (Number(reply[2 * i + 1]) > 0) {
        this.zeroSince.delete(node)
        if (!this.byNode.has(node)) this.apply({ node, seq: 0, add: await pub.hkeys(this.keys.routes(node)) })
        continue
      }
      const since = this.zeroSince.get(node) ?? now
      this.zeroSince.set(node, since)
      if (now - since >= this.options.heartbeatInterval * 1000) this.forget(node)
      if (now - since >= FORGET_AFTER_MS) {
        await pub.multi().srem(this.keys.nodes, node).del(this.keys.routes(node)).exec()
        this.zeroSince.delete(node)
      }
    }
  }
}
