import type { Client } from 'aedes'
import type { Packet } from 'mqtt-packet'

/*
 * A connection's delivery state, in one object: what the client has not acknowledged yet (the
 * outbound window, the client's Receive Maximum) and what the node has not acknowledged yet (the
 * inbound quota, the node's Receive Maximum), on every path a PUBLISH takes, the broker's own
 * (mqtt/fast-publish.ts) and aedes' handlers alike. docs/architecture.md: step 2 of moving a
 * session's delivery out of the patches around aedes into broker/core/.
 *
 * Created on first use: a connection that never sends or receives a QoS 1/2 message has none.
 */

export interface WaitingPublish {
  readonly packet: Packet & { cmd: 'publish' }
  readonly send: (packet: Packet) => boolean
}

export class Session {
  // Outbound [MQTT-3.3.4-9]: at most min(the client's Receive Maximum, limits.maxInflight) QoS 1/2
  // PUBLISH packets unacknowledged (mqtt/flow-control.ts decides, here is its state).
  /** Packet identifiers sent and not yet acknowledged (PUBACK, PUBCOMP, or a failing PUBREC). */
  readonly inflight = new Set<number>()
  /** QoS 1/2 PUBLISH packets waiting for the window, a queue: `waiting[head]` goes next. */
  waiting: WaitingPublish[] = []
  head = 0
  /** A flush is scheduled: acknowledgements that arrive together release the window once. */
  flushing = false
  /** A resumed session's stored messages waiting for room in the window (created with the first one). */
  roomWaiters: (() => void)[] | undefined = undefined

  // Inbound (5.0 §3.3.4): the node's Receive Maximum, counted for 5.0 clients only (3.1.1 has none).
  /** QoS 1 PUBLISH packets aedes handles, whose PUBACK is not written yet. */
  inboundQos1 = 0
  /** QoS 2 packet identifiers between PUBLISH and PUBCOMP (or a failing PUBREC). */
  inboundQos2: Set<number> | undefined = undefined
  /** QoS 1 PUBLISH packets on the broker's own path, started and not acknowledged yet. */
  inboundOwnPath = 0
  /**
   * PUBLISH packets on the broker's own path waiting for the inbound quota, in arrival order; a
   * QoS 0 one waits behind them too (`takesQuota` false), so that a topic's messages keep their order.
   */
  paced: { readonly start: () => void; readonly takesQuota: boolean }[] | undefined = undefined

  /** QoS 1/2 PUBLISH packets waiting for the outbound window. */
  get queued(): number {
    return this.waiting.length - this.head
  }

  /** QoS 1/2 PUBLISH packets the node has not acknowledged, every path together. */
  get inboundUnacknowledged(): number {
    return this.inboundQos1 + (this.inboundQos2?.size ?? 0) + this.inboundOwnPath
  }
}

const sessions = new WeakMap<Client, Session>()

/** The connection's Session, created on first use. */
export function sessionOf(client: Client): Session {
  let session = sessions.get(client)
  if (session === undefined) sessions.set(client, session = new Session())
  return session
}

/** The connection's Session if it has one (lookups on the hot path that must not create it). */
export const existingSession = (client: Client): Session | undefined => sessions.get(client)

interface InboundQuota {
  /** `limits.receiveMaximum`. */
  readonly receiveMaximum: number
  /** Ends a client over it (DISCONNECT 0x93). */
  readonly onExceeded: (client: Client, unacknowledged: number) => void
}

/** The node's Receive Maximum, once mqtt/receive-maximum.ts advertises it; undefined without (no inbound quota). */
let quota: InboundQuota | undefined

export function setInboundQuota(value: InboundQuota | undefined): void {
  quota = value
}

/** QoS 1 PUBLISH packets whose PUBACK the node writes without waiting for the client. */
const freedByNode = (session: Session): number => session.inboundQos1 + session.inboundOwnPath

/**
 * Starts a PUBLISH on the broker's own path (`start`) within the node's Receive Maximum, for 5.0
 * clients (3.1.1 has none). At the limit, a QoS 1 PUBLISH waits for a PUBACK of the node's own
 * (which comes without anything from the client) and starts then: a client that sends more than
 * the Receive Maximum at once [MQTT-3.3.4-7] is paced rather than disconnected. MQTT.js 5 ignores
 * the server's Receive Maximum, and a burst of its QoS 1 publishes would otherwise end its
 * connection (docs/protocol.md). The waiting packets keep the connection's next read waiting too
 * (aedes reads on once every packet of a read is done), so a burst is bounded by TCP. When the
 * quota is held only by the client's own QoS 2 flows, which need its PUBREL, waiting could never
 * end: that client is over the limit and gets DISCONNECT 0x93 (§3.3.4). A QoS 0 PUBLISH takes
 * no quota but waits behind paced ones, so that arrival order is kept [MQTT-4.6.0-6].
 */
export function startWithinQuota(client: Client, qos: number, start: () => void): void {
  if (client.version !== 5 || quota === undefined) return start()
  const session = qos > 0 ? sessionOf(client) : existingSession(client)
  if (session === undefined) return start()
  const takesQuota = qos > 0
  if (session.paced?.length || (takesQuota && session.inboundUnacknowledged >= quota.receiveMaximum)) {
    (session.paced ??= []).push({ start, takesQuota })
    startPaced(client, session)
    return
  }
  if (takesQuota) session.inboundOwnPath++
  start()
}

/** A QoS 1 PUBLISH started by `startWithinQuota` is acknowledged (or failed): its quota goes to the next one waiting. */
export function ownPathAcknowledged(client: Client): void {
  const session = existingSession(client)
  if (session === undefined) return
  if (session.inboundOwnPath > 0) session.inboundOwnPath--
  startPaced(client, session)
}

/** Starts the PUBLISH packets waiting for the inbound quota while there is room; see startWithinQuota. */
export function startPaced(client: Client, session: Session): void {
  const paced = session.paced
  while (paced !== undefined && paced.length > 0 && !client.closed) {
    const next = paced[0]
    if (next.takesQuota && quota !== undefined && session.inboundUnacknowledged >= quota.receiveMaximum) {
      if (freedByNode(session) === 0) quota.onExceeded(client, session.inboundUnacknowledged + 1)
      return
    }
    if (next.takesQuota) session.inboundOwnPath++
    paced.shift()
    next.start()
  }
}
