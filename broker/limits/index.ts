import type { Aedes, AedesPublishPacket, Client, ConnectPacket } from 'aedes'
import type { Duplex } from 'node:stream'
import type { Config } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { connectionInfo } from '../connection-info.js'
import { listenerName } from '../listeners/common.js'
import type { LimitName, Metrics } from '../mgmt/metrics.js'
import { ConnectRefusal, disconnectClient, REASON, RETURN_CODE } from './refuse.js'
import { KeyedTokenBuckets, TokenBucket } from './token-bucket.js'
import { addressIn, rateExemptList } from '../auth/acl-rules.js'
import { badUtf8, explainProtocolErrors, MALFORMED_PACKET } from './protocol-errors.js'
import { installTopicLimits } from './topic-limits.js'
import { internals } from '../core/aedes-adapter.js'

/*
 * Limits that protect the node. Each refusal answers with the protocol's reason code, logs why
 * (throttled to one line per limit per second, with the count of the ones it held back), counts
 * `fleetmq_limit_hits_total{limit}`, and leaves every other client alone.
 *
 * - connections, node-wide and per listener: CONNACK 0x97 Quota exceeded (5.0) / 3 Server
 *   unavailable (3.1.1, whose return codes 0..5 have nothing closer) [MQTT-3.2.2.2]
 * - connect rate per listener, and per source address on every listener (token buckets, bursts
 *   of one second): 0x9F Connection rate exceeded / 3
 * - keep-alive: 0 accepted unless configured otherwise; 5.0 clients outside the bounds get one as
 *   Server Keep Alive [MQTT-3.2.2-21]; 3.1.1 clients outside them are refused with 3 (see
 *   `keepAliveVerdict`)
 * - client identifier length: 0x85 Client Identifier not valid / 2 Identifier rejected
 *   [MQTT-3.1.3-8]
 * - topic names longer than maxTopicLength: DISCONNECT 0x90 Topic Name invalid (5.0) or a
 *   closed connection (3.1.1) [MQTT-3.3.2]; with more than maxTopicLevels levels: the same
 *   (topic-limits.ts); topic filters over either limit: SUBACK 0x8F Topic Filter invalid (5.0)
 *   or 0x80 (3.1.1) for that filter (topic-limits.ts)
 * - more QoS 1/2 PUBLISH packets unacknowledged than limits.receiveMaximum (5.0): DISCONNECT
 *   0x93 (mqtt/receive-maximum.ts counts, `receiveMaximumExceeded` ends the client)
 * - slow and stuck consumers (see `forwardVerdict`)
 */

type Limits = Config['limits']


/** What the node does with a delivery to a client, given the bytes waiting in its socket. */
export type ForwardVerdict = 'send' | 'drop' | 'disconnect'

/** How far a subscriber fell behind since its socket last held less than `slowConsumerBytes`. */
export interface SlowState {
  /** QoS 1/2 messages queued while slow. */
  queued: number
  /** Bytes of QoS 0 messages dropped while slow. */
  dropped: number
}

/**
 * A subscriber whose socket holds more than `slowConsumerBytes` unsent gets no more QoS 0 (it
 * would only grow the buffer); QoS 1/2 are still queued, up to `maxQueued` of them while it stays
 * slow. It is disconnected once it is `stuckConsumerBytes` behind (bytes waiting in its socket plus
 * the QoS 0 bytes dropped since it was last caught up: a client that reads nothing is cut after
 * that much traffic even when all of it was QoS 0), or past `maxQueued`. A persistent session
 * keeps its QoS 1/2 messages for when it comes back.
 */
export function forwardVerdict(buffered: number, qos: number, state: Readonly<SlowState>, limits: Pick<Limits, 'slowConsumerBytes' | 'stuckConsumerBytes' | 'maxQueued'>): ForwardVerdict {
  if (buffered + state.dropped > limits.stuckConsumerBytes) return 'disconnect'
  if (buffered <= limits.slowConsumerBytes) return 'send'
  if (qos === 0) return 'drop'
  return state.queued >= limits.maxQueued && limits.maxQueued > 0 ? 'disconnect' : 'send'
}

/**
 * Keep-alive bounds. A keep-alive of 0 turns keep-alive off, which is legal (3.1.1 §3.1.2.10,
 * 5.0 §3.1.2.10) and accepted by default, as mosquitto, EMQX and VerneMQ do. Behind a load balancer
 * that drops idle connections (the AWS NLB, after 350 s) the operator sets `serverKeepAlive`, which
 * 5.0 clients asking for 0 are given [MQTT-3.2.2-21]; refusing 3.1.1 clients that ask for 0 is
 * the explicit opt-in `refuseKeepAliveZero`.
 *
 * Non-zero values are bounded by minKeepAlive..maxKeepAlive: 5.0 clients outside get the bound as
 * Server Keep Alive. 3.1.1 has no way to tell a client which keep-alive to use, so a client outside
 * the bounds is refused with 3 Server unavailable, the code that makes a client retry later rather
 * than believe its credentials or identifier are wrong (aedes' own refusal, return code 6, is not a
 * 3.1.1 code: Table 3.1 stops at 5), and the log says why.
 */
export function keepAliveVerdict(keepalive: number, protocolVersion: number,
  limits: Pick<Limits, 'minKeepAlive' | 'maxKeepAlive' | 'serverKeepAlive' | 'refuseKeepAliveZero'>):
  | { verdict: 'accept' }
  | { verdict: 'serverKeepAlive'; value: number }
  | { verdict: 'refuse'; reason: string } {
  if (keepalive === 0) {
    if (protocolVersion === 5) return limits.serverKeepAlive > 0 ? { verdict: 'serverKeepAlive', value: limits.serverKeepAlive } : { verdict: 'accept' }
    return limits.refuseKeepAliveZero
      ? { verdict: 'refuse', reason: 'keep-alive 0 (disabled) is refused (limits.refuseKeepAliveZero; the AWS NLB drops idle TLS connections after 350 s)' }
      : { verdict: 'accept' }
  }
  if (keepalive > limits.maxKeepAlive) {
    return protocolVersion === 5
      ? { verdict: 'serverKeepAlive', value: limits.maxKeepAlive }
      : { verdict: 'refuse', reason: `keep-alive ${keepalive} s above the maximum ${limits.maxKeepAlive} s (limits.maxKeepAlive; the AWS NLB drops idle TLS connections after 350 s)` }
  }
  if (keepalive < limits.minKeepAlive) {
    return protocolVersion === 5
      ? { verdict: 'serverKeepAlive', value: limits.minKeepAlive }
      : { verdict: 'refuse', reason: `keep-alive ${keepalive} s below the minimum ${limits.minKeepAlive} s (limits.minKeepAlive)` }
  }
  return { verdict: 'accept' }
}

/** One log line per limit per second at most; the next one says how many were held back. */
function throttledLogger(log: Logger): (limit: LimitName, fields: Record<string, unknown>, message: string) => void {
  const last = new Map<LimitName, { at: number; held: number }>()
  return (limit, fields, message) => {
    const now = Date.now()
    const entry = last.get(limit)
    if (entry && now - entry.at < 1000) {
      entry.held++
      return
    }
    const held = entry?.held ?? 0
    last.set(limit, { at: now, held: 0 })
    log.warn({ ...fields, limit, ...(held ? { suppressed: held } : {}) }, held ? `${message} (and ${held} more in the last second)` : message)
  }
}

const utf8Length = (topic: string): number => Buffer.byteLength(topic, 'utf8')

interface ListenerLimits {
  readonly maxConnections: number
  readonly bucket: TokenBucket | undefined
  readonly connectRate: number
  open: number
}

export interface LimitsFeature extends Feature {
  /** Open MQTT connections that passed the limits, node-wide. */
  connections(): number
  /** Logs and counts the limits aedes enforces itself (Maximum Packet Size). */
  observe(aedes: Aedes): void
  /**
   * A client with more than `maxQueued` QoS 1/2 messages waiting for its in-flight window
   * (mqtt/flow-control.ts): it stopped acknowledging. Counted, logged, DISCONNECT 0x97.
   */
  queueFull(client: Client, queued: number): void
  /**
   * A 5.0 client with more QoS 1/2 PUBLISH packets unacknowledged than `limits.receiveMaximum`
   * (mqtt/receive-maximum.ts). Counted, logged, DISCONNECT 0x93 Receive Maximum exceeded.
   */
  receiveMaximumExceeded(client: Client, unacknowledged: number): void
}

export function limitsFeature(config: Config, log: Logger, metrics?: Metrics): LimitsFeature {
  const limits = config.limits
  const warn = throttledLogger(log)
  const listeners = new Map<string, ListenerLimits>(config.listeners.map((l) => [listenerName(l), {
    maxConnections: l.maxConnections,
    connectRate: l.connectRate,
    bucket: l.connectRate > 0 ? new TokenBucket(l.connectRate) : undefined,
    open: 0,
  }]))
  const perAddress = limits.connectRatePerAddress > 0 ? new KeyedTokenBuckets(limits.connectRatePerAddress) : undefined
  const exempt = rateExemptList(limits)
  const slow = new WeakMap<Client, SlowState>()
  let slowClients = 0
  let open = 0

  /** `this` is the stream of a connection counted in preConnect; aedes set `stream.client`. */
  function onConnectionClose(this: Duplex & { client?: Client }): void {
    open--
    const name = this.client ? connectionInfo(this.client)?.listener : undefined
    const listener = name !== undefined ? listeners.get(name) : undefined
    if (listener) listener.open--
  }

  const hit = (limit: LimitName, fields: Record<string, unknown>, message: string): void => {
    metrics?.limitHit(limit)
    warn(limit, fields, message)
  }

  const refuse = (limit: LimitName, fields: Record<string, unknown>, reasonCode: number, returnCode: number, message: string): never => {
    hit(limit, { ...fields, reasonCode, returnCode }, `refused ${String(fields.clientId ?? 'a client')} from ${String(fields.remoteAddress ?? 'unknown')}: ${message}`)
    throw new ConnectRefusal(reasonCode, returnCode, message)
  }

  const removeTopicLimits = installTopicLimits({
    maxTopicLength: limits.maxTopicLength,
    maxTopicLevels: limits.maxTopicLevels,
    refusedFilter(client, filter, limit, message) {
      hit(limit, { clientId: client.id, topic: filter.slice(0, 64) }, `refused a subscription of ${client.id}: ${message}`)
    },
  })

  return {
    name: 'limits',

    connections: () => open,

    receiveMaximumExceeded(client, unacknowledged) {
      const message = `${unacknowledged} QoS 1/2 PUBLISH packets unacknowledged, the Receive Maximum is ${limits.receiveMaximum} (limits.receiveMaximum)`
      hit('receiveMaximum', { clientId: client.id, remoteAddress: connectionInfo(client)?.remoteAddress, unacknowledged }, `disconnected ${client.id}: ${message}`)
      // 0x93 Receive Maximum exceeded (§3.3.4, §4.9).
      disconnectClient(client, REASON.RECEIVE_MAXIMUM_EXCEEDED, message)
    },

    close() {
      removeTopicLimits()
    },

    queueFull(client, queued) {
      const message = `${queued} QoS 1/2 messages waiting for acknowledgements (limits.maxInflight ${limits.maxInflight} in flight), limits.maxQueued is ${limits.maxQueued}`
      metrics?.dropped('queueFull')
      hit('maxQueued', { clientId: client.id, remoteAddress: connectionInfo(client)?.remoteAddress, queued }, `disconnected ${client.id}: ${message}`)
      // 0x97 Quota exceeded [MQTT-3.14.2.1]; a 3.1.1 client is closed.
      disconnectClient(client, REASON.QUOTA_EXCEEDED, message)
    },

    observe(aedes) {
      // aedes rejects an oversized packet itself: DISCONNECT 0x95 Packet too large to a connected
      // 5.0 client, a closed connection otherwise [MQTT-3.2.2-15]; the error carries the sizes.
      const onError = (client: Client, err: Error & { size?: number; maximumPacketSize?: number }): void => {
        if (err.message === 'topic has too many levels') {
          // aedes' own check on a PUBLISH; 5.0 clients were sent DISCONNECT 0x90 (topic-limits.ts).
          hit('maxTopicLevels', { clientId: client.id ?? undefined, remoteAddress: connectionInfo(client)?.remoteAddress },
            `disconnected ${client.id ?? 'a client'}: topic name with more than ${limits.maxTopicLevels} levels (limits.maxTopicLevels)`)
          return
        }
        if (err.message !== 'packet too large') return
        const info = connectionInfo(client)
        hit('maxPacketSize', { clientId: client.id ?? undefined, remoteAddress: info?.remoteAddress, size: err.size },
          `disconnected ${client.id ?? 'a client'} from ${info?.remoteAddress ?? 'unknown'}: packet of ${err.size} bytes, above limits.maxPacketSize (${err.maximumPacketSize})`)
      }
      aedes.on('clientError', onError)
      aedes.on('connectionError', onError)
    },

    preConnect(client: Client, packet: ConnectPacket) {
      const info = connectionInfo(client)
      const listener = info?.listener !== undefined ? listeners.get(info.listener) : undefined
      const version = packet.protocolVersion ?? 4
      const fields = { clientId: packet.clientId, listener: info?.listener, remoteAddress: info?.remoteAddress, protocolVersion: version }

      // Per address first: a source over its own rate does not use up the listener's tokens.
      if (perAddress && info?.remoteAddress !== undefined && !addressIn(exempt, info.remoteAddress) && !perAddress.take(info.remoteAddress)) {
        refuse('connectRatePerAddress', fields, REASON.CONNECTION_RATE_EXCEEDED, RETURN_CODE.SERVER_UNAVAILABLE,
          `this node accepts ${limits.connectRatePerAddress} connections a second from one address (limits.connectRatePerAddress); retry later`)
      }
      if (listener?.bucket && !listener.bucket.take()) {
        refuse('connectRate', fields, REASON.CONNECTION_RATE_EXCEEDED, RETURN_CODE.SERVER_UNAVAILABLE,
          `listener ${info?.listener} accepts ${listener.connectRate} connections a second (connectRate); retry later`)
      }
      if (limits.maxConnections > 0 && open >= limits.maxConnections) {
        refuse('maxConnections', fields, REASON.QUOTA_EXCEEDED, RETURN_CODE.SERVER_UNAVAILABLE,
          `this node serves at most ${limits.maxConnections} connections (limits.maxConnections)`)
      }
      if (listener && listener.maxConnections > 0 && listener.open >= listener.maxConnections) {
        refuse('listenerMaxConnections', fields, REASON.QUOTA_EXCEEDED, RETURN_CODE.SERVER_UNAVAILABLE,
          `listener ${info?.listener} serves at most ${listener.maxConnections} connections (maxConnections)`)
      }
      if (Buffer.byteLength(packet.clientId ?? '', 'utf8') > limits.maxClientIdLength) {
        refuse('maxClientIdLength', fields, REASON.CLIENT_IDENTIFIER_NOT_VALID, RETURN_CODE.IDENTIFIER_REJECTED,
          `client identifier longer than ${limits.maxClientIdLength} bytes (limits.maxClientIdLength)`)
      }
      const keepAlive = keepAliveVerdict(packet.keepalive ?? 0, version, limits)
      if (keepAlive.verdict === 'refuse') {
        refuse('keepAlive', fields, REASON.SERVER_UNAVAILABLE, RETURN_CODE.SERVER_UNAVAILABLE, keepAlive.reason)
      } else if (keepAlive.verdict === 'serverKeepAlive') {
        // aedes sends `_serverKeepAlive` as Server Keep Alive in the CONNACK and times the
        // connection by it (its own keepaliveLimit is off: it would refuse Keep Alive 0).
        internals(client)._serverKeepAlive = keepAlive.value
      }

      open++
      if (listener) listener.open++
      const conn = client.conn as Duplex
      // One function for every connection (no closure each): 'close' comes once.
      conn.on('close', onConnectionClose)
      // The socket's own buffer is the subscriber's queue, bounded by forwardVerdict. aedes waits
      // for 'drain' whenever write() returns false, and while it waits the delivery holds one of
      // the message emitter's `concurrency` slots: 100 deliveries to one subscriber that stopped
      // reading stall routing for every client. Above the stuck bound the client is cut, so
      // write() never has to say "wait" before that.
      const state = (conn as unknown as { _writableState?: { highWaterMark: number } })._writableState
      if (state) state.highWaterMark = Math.max(state.highWaterMark, limits.stuckConsumerBytes + limits.maxPacketSize)
      if (version === 5) explainProtocolErrors(client)
    },

    authorizePublish(client, packet) {
      if (client === null) return null
      if (badUtf8(packet.topic)) {
        // [MQTT-1.5.4-1] ill-formed UTF-8 (or U+0000) in a topic: a Malformed Packet, which closes
        // the connection [MQTT-4.13.1-1]. Note: a topic with a literal U+FFFD is refused too.
        if (client.version === 5) disconnectClient(client, MALFORMED_PACKET, 'the topic name is not valid UTF-8 [MQTT-1.5.4-1]')
        return new Error('the topic name is not valid UTF-8 [MQTT-1.5.4-1]')
      }
      // A UTF-16 unit takes at most 3 bytes in UTF-8: most topics need no byte count.
      if (packet.topic.length * 3 <= limits.maxTopicLength || utf8Length(packet.topic) <= limits.maxTopicLength) return null
      const message = `topic name of ${utf8Length(packet.topic)} bytes is longer than ${limits.maxTopicLength} (limits.maxTopicLength)`
      const info = connectionInfo(client)
      hit('maxTopicLength', { clientId: client.id, remoteAddress: info?.remoteAddress }, `disconnected ${client.id}: ${message}`)
      // 0x90 Topic Name invalid [MQTT-3.14.2.1]: "not malformed, but not accepted by this
      // Server". A 3.1.1 client is closed (aedes closes it on the error below).
      if (client.version === 5) disconnectClient(client, REASON.TOPIC_NAME_INVALID, message)
      return new Error(message)
    },

    authorizeSubscribe(client, sub) {
      if (badUtf8(sub.topic)) {
        // [MQTT-1.5.4-1]: a Malformed Packet closes the connection, whatever the protocol version.
        disconnectClient(client, MALFORMED_PACKET, 'a topic filter is not valid UTF-8 [MQTT-1.5.4-1]')
        return null
      }
      // Filters over maxTopicLength or maxTopicLevels never get here: topic-limits.ts answers them.
      return sub
    },

    authorizeForward(client: Client, packet: AedesPublishPacket) {
      const buffered = (client.conn as Duplex).writableLength ?? 0
      if (buffered <= limits.slowConsumerBytes) {
        // It caught up: its next slow spell counts from zero.
        if (slowClients > 0 && slow.delete(client)) slowClients--
        return packet
      }
      let state = slow.get(client)
      if (!state) {
        slow.set(client, state = { queued: 0, dropped: 0 })
        slowClients++
      }
      const verdict = forwardVerdict(buffered, packet.qos, state, limits)
      if (verdict === 'send') {
        if (packet.qos > 0) state.queued++
        return packet
      }
      if (verdict === 'drop') {
        state.dropped += packet.payload.length + packet.topic.length
        metrics?.dropped('slowConsumer')
        return null
      }
      const stuck = packet.qos === 0 || state.queued < limits.maxQueued || limits.maxQueued === 0
      const limit: LimitName = stuck ? 'stuckConsumerBytes' : 'maxQueued'
      const message = stuck
        ? `${buffered + state.dropped} bytes behind (${buffered} unread, ${state.dropped} dropped), above limits.stuckConsumerBytes (${limits.stuckConsumerBytes}): the client stopped reading`
        : `${state.queued} QoS 1/2 messages queued while slow, limits.maxQueued is ${limits.maxQueued}`
      metrics?.dropped(stuck ? 'stuckConsumer' : 'queueFull')
      hit(limit, { clientId: client.id, remoteAddress: connectionInfo(client)?.remoteAddress, buffered, dropped: state.dropped }, `disconnected ${client.id}: ${message}`)
      // 0x97 Quota exceeded: "an implementation or administrative imposed limit has been
      // exceeded" [MQTT-3.14.2.1].
      disconnectClient(client, REASON.QUOTA_EXCEEDED, message)
      return null
    },
  }
}
