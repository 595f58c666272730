import type { Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import type { Logger } from '../log.js'
import { internals } from '../core/aedes-adapter.js'
import { existingSession, sessionOf, type Session, type WaitingPublish } from '../core/session.js'
import { tapInbound, tapOutbound, wireSize } from '../core/wire.js'

/*
 * Outbound flow control, which aedes 2.0.0-beta.1 lacks (it stores a 5.0 client's Receive Maximum
 * and Maximum Packet Size as advisory values, lib/handlers/connect.js, and sends every QoS 1/2
 * message at once):
 *
 * - The window: at most min(the client's Receive Maximum, `limits.maxInflight`) QoS 1/2 PUBLISH
 *   packets unacknowledged at once, on every protocol version (3.1.1 has no Receive Maximum: the
 *   5.0 default 65,535 stands in [MQTT-3.1.2.11.3]) [MQTT-3.3.4-9]. Beyond it QoS 1/2 PUBLISH
 *   packets wait here, in order [MQTT-4.6.0-6], and go out as PUBACK, PUBCOMP or a failing PUBREC
 *   frees the quota [MQTT-4.9.0-2, MQTT-4.9.0-3]. QoS 0 messages do not wait: "It MAY continue to
 *   send PUBLISH packets with QoS 0" (§4.9), and ordering holds per topic and QoS (§4.6).
 * - The queue: more than `limits.maxQueued` QoS 1/2 messages waiting for the window means the
 *   client stopped acknowledging; `onQueueFull` disconnects it (0x97 Quota exceeded). A persistent
 *   session keeps the messages: waiting packets are already in the session's outgoing store (aedes
 *   writes it before the socket) and are resent when the client comes back.
 * - Maximum Packet Size [MQTT-3.1.2-24, MQTT-3.1.2-25]: a PUBLISH larger than a 5.0 client accepts
 *   is discarded and treated as delivered: its QoS 1/2 state is cleared from the session so it is
 *   not resent on reconnect.
 *
 * The state is the connection's Session (core/session.ts), created for connections that were sent
 * a QoS 1/2 message or were over a limit.
 *
 * - Session restore: a resumed persistent session's stored messages (aedes' `emptyQueue`) pass
 *   `whenWindowHasRoom` first (mqtt/redelivery.ts), so the next one is read only once nothing waits
 *   here and the window has room. Handed over all at once, a session that kept more than
 *   `maxQueued` + the window while its client was away (or was disconnected for being over
 *   `maxQueued`) would be over `maxQueued` again the moment it resumed: disconnected before its
 *   client could acknowledge anything, at every reconnection, its messages never delivered.
 */

export interface FlowControlOptions {
  readonly log: Logger
  /** `limits.maxInflight`: the node's own bound on the window. */
  readonly maxInflight: number
  /** `limits.maxQueued`: QoS 1/2 messages waiting for the window before `onQueueFull` (0 = no bound). */
  readonly maxQueued: number
  /** Ends a client whose queue is full (it is called once; the client is closing afterwards). */
  readonly onQueueFull: (client: Client, queued: number) => void
}

const RECEIVE_MAXIMUM_DEFAULT = 65_535 // [MQTT-3.1.2.11.3] absent Receive Maximum
const REASON_CODE_ERROR_THRESHOLD = 0x80

/**
 * Connections with QoS 1/2 messages waiting for their window: the node's delivery backlog, which
 * the cluster's backpressure bounds (cluster/backend.ts). A closed connection's entry is removed
 * when the backlog is next counted.
 */
const backlogged = new Map<Client, Session>()

/** QoS 1/2 messages waiting for a subscriber's window on this node, all connections together. */
export function queuedForWindows(): number {
  let total = 0
  for (const [client, state] of backlogged) {
    if (client.closed || state.queued === 0) backlogged.delete(client)
    else total += state.queued
  }
  return total
}

/** Set by `installFlowControl`: a node without flow control lets every restored message through. */
let roomGate: ((client: Client, go: () => void) => void) | undefined

/**
 * Calls `go` once no QoS 1/2 message waits for `client`'s window and the window has room (at once
 * when that holds now, or when the connection is closed or closes meanwhile). For the messages of
 * a resumed session: see above.
 */
export function whenWindowHasRoom(client: Client, go: () => void): void {
  if (roomGate === undefined) go()
  else roomGate(client, go)
}

export function installFlowControl(options: FlowControlOptions): () => void {
  const { log, maxInflight, maxQueued, onQueueFull } = options
  const windowOf = (client: Client): number => Math.min(client.receiveMaximum ?? RECEIVE_MAXIMUM_DEFAULT, maxInflight)
  const hasRoom = (client: Client, state: Session): boolean => state.queued === 0 && state.inflight.size < windowOf(client)

  /** Lets the restore go on while there is room (each waiter sends one message, which may fill it). */
  const wake = (client: Client, state: Session): void => {
    const waiters = state.roomWaiters
    while (waiters !== undefined && waiters.length > 0 && (client.closed || hasRoom(client, state))) waiters.shift()!()
  }

  const flush = (client: Client, state: Session): void => {
    state.flushing = false
    const limit = windowOf(client)
    while (state.head < state.waiting.length && state.inflight.size < limit) {
      const { packet, send } = state.waiting[state.head]
      state.waiting[state.head++] = undefined as unknown as WaitingPublish
      state.inflight.add(packet.messageId!)
      if (!client.closed) send(packet)
    }
    if (state.head === state.waiting.length) {
      state.waiting = []
      state.head = 0
    }
    wake(client, state)
  }

  roomGate = (client, go) => {
    const state = sessionOf(client)
    if (client.closed || (hasRoom(client, state) && !state.roomWaiters?.length)) return go()
    if (state.roomWaiters === undefined) {
      state.roomWaiters = []
      // A closed connection's restore is let go: its writes fail and end it.
      const conn = internals(client).conn as NodeJS.EventEmitter | undefined
      const current = state
      conn?.once('close', () => { for (const waiter of current.roomWaiters!.splice(0)) waiter() })
    }
    state.roomWaiters.push(go)
  }

  const tooLarge = (client: Client, packet: Packet & { cmd: 'publish' }): boolean => {
    const maximum = client.maximumPacketSize
    if (client.version !== 5 || maximum === undefined) return false
    const size = wireSize(packet, 5)
    if (size <= maximum) return false
    log.debug({ clientId: client.id, topic: packet.topic, size, maximumPacketSize: maximum },
      'message larger than the client accepts: discarded [MQTT-3.1.2-25]')
    if (packet.qos > 0 && !client.clean) {
      internals(client).broker.persistence.outgoingClearMessageId(client, packet).catch((err: Error) => log.warn({ err, clientId: client.id }, 'could not clear a discarded message'))
    }
    return true
  }

  const removeOutbound = tapOutbound({ cmds: ['publish'] }, (client, p, send) => {
    const packet = p as Packet & { cmd: 'publish' }
    if (tooLarge(client, packet)) return true
    if (packet.qos === 0) return send(packet)
    const state = sessionOf(client)
    // A resend of a message already in flight (session resume) takes no new quota.
    if (state.inflight.has(packet.messageId!)) return send(packet)
    if (state.queued === 0 && state.inflight.size < windowOf(client)) {
      state.inflight.add(packet.messageId!)
      return send(packet)
    }
    if (maxQueued > 0 && state.queued >= maxQueued) {
      if (!client.closed) onQueueFull(client, state.queued)
      return true
    }
    state.waiting.push({ packet, send })
    backlogged.set(client, state)
    return true
  })

  const removeInbound = tapInbound({ cmds: ['puback', 'pubcomp', 'pubrec'] }, (client, packet) => {
    // A successful PUBREC keeps the quota until the PUBCOMP [MQTT-4.9.0-2].
    if (packet.cmd === 'pubrec' && (packet.reasonCode ?? 0) < REASON_CODE_ERROR_THRESHOLD) return
    if (packet.messageId === undefined) return
    const state = existingSession(client)
    if (state === undefined || !state.inflight.delete(packet.messageId)) return
    // Flush after aedes has handled the ack (it runs right after this tap).
    if (state.queued > 0 && !state.flushing) {
      state.flushing = true
      setImmediate(flush, client, state)
    } else if (state.roomWaiters?.length) {
      setImmediate(wake, client, state)
    }
  })

  return () => {
    roomGate = undefined
    removeOutbound()
    removeInbound()
  }
}
