import type { Aedes, Client } from 'aedes'
import type { Duplex } from 'node:stream'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { Feature } from '../hooks.js'
import type { Route } from './http.js'

/*
 * The node's Prometheus metrics, on a registry of its own (never prom-client's global one, so two
 * nodes in one process or a test never share counters).
 *
 * The hot path (every message in and every delivery out) only adds 1 to a slot of a plain array;
 * the Prometheus counters catch up from those totals when scraped. Everything that is a count of
 * things (connections, subscriptions, bytes on sockets) is read from the broker at scrape time.
 */

export const LIMITS = [
  'maxConnections', 'listenerMaxConnections', 'connectRate', 'connectRatePerAddress', 'loginBackoff', 'keepAlive', 'maxClientIdLength',
  'maxTopicLength', 'maxTopicLevels', 'maxPacketSize', 'receiveMaximum', 'stuckConsumerBytes', 'maxQueued',
] as const
export type LimitName = (typeof LIMITS)[number]

export const DROP_REASONS = ['slowConsumer', 'stuckConsumer', 'queueFull', 'overload'] as const
export type DropReason = (typeof DROP_REASONS)[number]

/** What `$SYS` publishes: plain numbers, read synchronously. */
export interface NodeStats {
  readonly clientsConnected: number
  readonly clientsTotal: number
  readonly messagesReceived: number
  readonly messagesSent: number
  readonly bytesReceived: number
  readonly bytesSent: number
  readonly subscriptions: number
  readonly messagesDropped: number
  readonly retained: number | undefined
}

export interface Metrics {
  readonly registry: Registry
  limitHit(limit: LimitName): void
  dropped(reason: DropReason): void
  /** A counter read from another part at scrape time (e.g. the cluster backend's persistence errors). */
  counterSource(name: string, help: string, read: () => number): void
  /** A gauge read from another part at scrape time. */
  gaugeSource(name: string, help: string, read: () => number): void
  /** Counts messages in (published) and out (forwarded). List it last: it sees what the others let through. */
  readonly feature: Feature
  /** Reads gauges and failure events from the running broker. */
  observe(aedes: Aedes): void
  /** `GET /metrics`, behind the management API's authentication. */
  readonly route: Route
  render(): Promise<string>
  stats(): NodeStats
  /** Retained messages, counted at most every `RETAINED_RECOUNT_MS` (at once after a retained publish on this node). */
  retainedCount(): Promise<number | undefined>
}

/** Counting retained messages walks the store (SCAN on Redis): not more than once per 5 s. */
const RETAINED_RECOUNT_MS = 5_000

interface Persistence {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<unknown>
}

type Socketish = Duplex & { bytesRead?: number; bytesWritten?: number }

/** A counter whose value lives in `totals` (indexed like `labels`) and is caught up at scrape. */
function counterFrom(registry: Registry, name: string, help: string, label: string | undefined, labels: readonly string[], totals: () => readonly number[]): void {
  const reported = labels.map(() => 0)
  new Counter({
    name,
    help,
    labelNames: label ? [label] : [],
    registers: [registry],
    collect() {
      const now = totals()
      labels.forEach((value, i) => {
        const delta = now[i] - reported[i]
        reported[i] = now[i]
        if (label) this.labels({ [label]: value }).inc(delta)
        else this.inc(delta)
      })
    },
  })
}

export function createMetrics(): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })

  const received = [0, 0, 0]
  const sent = [0, 0, 0]
  const drops = DROP_REASONS.map(() => 0)
  let aedes: Aedes | undefined
  let clientsTotal = 0
  let closedBytesRead = 0
  let closedBytesWritten = 0
  const live = new Set<Socketish>()
  let retained: { at: number; count: number } | undefined
  let retainedCounting: Promise<number | undefined> | undefined

  const qosLabels = ['0', '1', '2'] as const
  counterFrom(registry, 'fleetmq_messages_received_total', 'PUBLISH packets received from clients, by QoS', 'qos', qosLabels, () => received)
  counterFrom(registry, 'fleetmq_messages_sent_total', 'PUBLISH packets forwarded to subscribers, by the QoS of the delivery (the lower of the message and the subscription)', 'qos', qosLabels, () => sent)
  counterFrom(registry, 'fleetmq_messages_dropped_total', 'messages not delivered to a subscriber, by reason', 'reason', DROP_REASONS, () => drops)

  const bytes = (): [number, number] => {
    let read = closedBytesRead
    let written = closedBytesWritten
    for (const conn of live) {
      read += conn.bytesRead ?? 0
      written += conn.bytesWritten ?? 0
    }
    return [read, written]
  }
  counterFrom(registry, 'fleetmq_bytes_received_total', 'bytes read from MQTT connections (TCP and TLS payload; not WebSocket framing)', undefined, [''], () => [bytes()[0]])
  counterFrom(registry, 'fleetmq_bytes_sent_total', 'bytes written to MQTT connections (TCP and TLS payload; not WebSocket framing)', undefined, [''], () => [bytes()[1]])
  counterFrom(registry, 'fleetmq_connections_total', 'MQTT clients that completed CONNECT on this node since it started', undefined, [''], () => [clientsTotal])

  const limitHits = new Counter({ name: 'fleetmq_limit_hits_total', help: 'connections refused, clients disconnected or requests denied by a limit', labelNames: ['limit'], registers: [registry] })
  const limitChildren = new Map(LIMITS.map((limit) => [limit, limitHits.labels({ limit })]))
  const authFailures = new Counter({ name: 'fleetmq_auth_failures_total', help: 'CONNECTs refused for bad credentials or lack of authorization', registers: [registry] })

  const clients = (): Client[] => (aedes ? Object.values((aedes as unknown as { clients: Record<string, Client> }).clients) : [])
  const subscriptionCount = (): number => clients().reduce((sum, c) => sum + Object.keys((c as unknown as { subscriptions: object }).subscriptions).length, 0)

  new Gauge({ name: 'fleetmq_connections', help: 'MQTT clients connected to this node', registers: [registry], collect() { this.set(aedes?.connectedClients ?? 0) } })
  new Gauge({ name: 'fleetmq_subscriptions', help: 'subscriptions of the clients connected to this node', registers: [registry], collect() { this.set(subscriptionCount()) } })
  new Gauge({
    name: 'fleetmq_queued_messages',
    help: 'messages accepted by this node and waiting to be routed to subscribers (the routing queue)',
    registers: [registry],
    collect() { this.set((aedes as unknown as { mq?: { length?: number } } | undefined)?.mq?.length ?? 0) },
  })
  new Gauge({
    name: 'fleetmq_outbound_buffered_bytes',
    help: 'bytes written to subscribers and not yet sent by the kernel (what slow consumers hold)',
    registers: [registry],
    collect() { this.set(clients().reduce((sum, c) => sum + ((c.conn as Duplex).writableLength ?? 0), 0)) },
  })

  const retainedCount = async (): Promise<number | undefined> => {
    if (!aedes) return undefined
    if (retained && Date.now() - retained.at < RETAINED_RECOUNT_MS) return retained.count
    retainedCounting ??= (async () => {
      const persistence = (aedes as unknown as { persistence?: Persistence }).persistence
      if (!persistence?.createRetainedStreamCombi) return undefined
      let count = 0
      for await (const _ of persistence.createRetainedStreamCombi(['#'])) count++
      retained = { at: Date.now(), count }
      return count
    })().finally(() => { retainedCounting = undefined })
    return retainedCounting
  }
  new Gauge({
    name: 'fleetmq_retained_messages',
    help: `retained messages in the store (shared by the cluster; recounted at most every ${RETAINED_RECOUNT_MS / 1000} s)`,
    registers: [registry],
    async collect() {
      const count = await retainedCount()
      if (count !== undefined) this.set(count)
    },
  })

  /** One function for every connection (no closure each; `this` is the stream): 'close' comes once. */
  function onConnectionClose(this: Socketish): void {
    live.delete(this)
    closedBytesRead += this.bytesRead ?? 0
    closedBytesWritten += this.bytesWritten ?? 0
  }

  const feature: Feature = {
    name: 'metrics',
    preConnect(client) {
      const conn = client.conn as Socketish
      live.add(conn)
      conn.on('close', onConnectionClose)
    },
    published(packet, client) {
      if (client) received[packet.qos]++
      // A new or cleared retained message: the next read counts again.
      if (packet.retain) retained = undefined
    },
    authorizeForward(_client, packet) {
      sent[packet.qos]++
      return packet
    },
  }

  return {
    registry,
    feature,
    limitHit(limit) {
      limitChildren.get(limit)?.inc()
    },
    dropped(reason) {
      drops[DROP_REASONS.indexOf(reason)]++
    },
    counterSource(name, help, read) {
      counterFrom(registry, name, help, undefined, [''], () => [read()])
    },
    gaugeSource(name, help, read) {
      new Gauge({ name, help, registers: [registry], collect() { this.set(read()) } })
    },
    observe(broker) {
      aedes = broker
      broker.on('client', () => { clientsTotal++ })
      const onError = (_client: Client, err: Error): void => {
        const code = (err as { errorCode?: number }).errorCode
        // aedes' authenticate path: 4 bad user name or password, 5 not authorized [MQTT-3.2.2.3].
        if (code === 4 || code === 5) authFailures.inc()
      }
      broker.on('clientError', onError)
      broker.on('connectionError', onError)
    },
    route: {
      method: 'GET',
      path: '/metrics',
      handle: async () => ({ status: 200, body: await registry.metrics(), contentType: registry.contentType }),
    },
    render: () => registry.metrics(),
    retainedCount,
    stats() {
      const [bytesReceived, bytesSent] = bytes()
      return {
        clientsConnected: aedes?.connectedClients ?? 0,
        clientsTotal,
        messagesReceived: received[0] + received[1] + received[2],
        messagesSent: sent[0] + sent[1] + sent[2],
        bytesReceived,
        bytesSent,
        subscriptions: subscriptionCount(),
        messagesDropped: drops.reduce((a, b) => a + b, 0),
        retained: retained?.count,
      }
    },
  }
}
