import { createInterface } from 'node:readline'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { makeRealtime } from './brokers.js'
import { PacketType, PublishTemplate, WireClient, publishLayout, writePuback, type Endpoint } from './wire.js'

/*
 * The open-loop load generator: publishers that are not paced by the subscribers, as devices are
 * not. A QoS 1 publisher keeps `inflightPerPublisher` messages unacknowledged and sends the next
 * one as soon as a PUBACK frees a slot; a QoS 0 publisher writes whenever its socket takes more
 * (TCP backpressure only). Nothing here waits for the subscriber, so a broker that acknowledges
 * faster than it delivers builds a backlog, and the per-second samples show it: published
 * (acknowledged for QoS 1, written for QoS 0) against delivered.
 *
 * A process of its own, pinned apart from the brokers: one job as a JSON line on stdin, one JSON
 * line per second of samples and one result line on stdout.
 */

export interface OpenLoopJob {
  readonly qos: 0 | 1
  readonly publishers: number
  readonly publish: readonly Endpoint[]
  readonly subscribe: Endpoint
  readonly payloadBytes: number
  /** Unacknowledged QoS 1 PUBLISH packets per publisher. */
  readonly inflightPerPublisher: number
  readonly warmupMs: number
  readonly windowMs: number
  /** After the window: how long the subscriber may take to receive what was acknowledged. */
  readonly drainMs: number
  /** The subscriber's Clean Session flag: false for a persistent session (its messages stored in the broker). */
  readonly subscriberClean?: boolean
}

export interface OpenLoopSample {
  /** Seconds since the first message. */
  readonly at: number
  readonly published: number
  readonly delivered: number
}

export interface OpenLoopResult {
  /** Messages per second over the window (after the warm-up). */
  readonly publishedPerSecond: number
  readonly deliveredPerSecond: number
  /** Every second from the start, cumulative counts. */
  readonly samples: readonly OpenLoopSample[]
  /** QoS 1: messages acknowledged by the broker (PUBACK); QoS 0: messages written. */
  readonly published: number
  /** Messages the subscriber received, up to the end of the drain. */
  readonly delivered: number
  /** QoS 1 messages still unacknowledged when publishing stopped (neither lost nor counted). */
  readonly unacknowledged: number
  readonly generatorCpuPercent: number
}

export type OpenLoopEvent =
  | { readonly event: 'sample'; readonly sample: OpenLoopSample }
  | { readonly event: 'result'; readonly result: OpenLoopResult }

const PROBE = 0
const DATA = 1
const PROBE_TIMEOUT_MS = 15_000
/** The drain ends once nothing has arrived for this long. */
const QUIET_MS = 1_000
/** Packets a publisher writes per turn: one write, one syscall. */
const PUBLISH_BATCH = 64

function emit(event: OpenLoopEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`)
}

function payload(kind: number, bytes: number): Buffer {
  const buf = Buffer.alloc(Math.max(bytes, 2))
  buf[0] = kind
  return buf
}

async function run(job: OpenLoopJob): Promise<OpenLoopResult> {
  let delivered = 0
  const probesSeen = new Set<number>()
  const subscriber = await WireClient.connect(job.subscribe, { clientId: 'bench-open-sub', clean: job.subscriberClean ?? true })
  let acks: Buffer[] = []
  subscriber.onFrame((first, buf, start) => {
    if (first >> 4 !== PacketType.PUBLISH) return
    const { payloadStart, packetId } = publishLayout(first, buf, start)
    if (packetId) {
      const ack = Buffer.allocUnsafe(4)
      writePuback(ack, 0, packetId)
      acks.push(ack)
    }
    if (buf[payloadStart] === DATA) delivered++
    else probesSeen.add(buf[payloadStart + 1])
  })
  subscriber.afterRead = () => {
    if (acks.length === 0) return
    subscriber.socket.write(acks.length === 1 ? acks[0] : Buffer.concat(acks))
    acks = []
  }
  await subscriber.subscribe('bench/+', job.qos)

  let published = 0
  let running = false
  let pumpScheduled = false
  const publishers = await Promise.all(Array.from({ length: job.publishers }, async (_, i) => {
    const client = await WireClient.connect(job.publish[i % job.publish.length], { clientId: `bench-open-pub-${i}` })
    const probe = payload(PROBE, job.payloadBytes)
    probe[1] = i
    const p = { client, data: new PublishTemplate(`bench/${i}`, payload(DATA, job.payloadBytes), job.qos), probe: new PublishTemplate(`bench/${i}`, probe, 0), inflight: 0, nextId: 1 }
    client.onFrame((first) => {
      if (first >> 4 !== PacketType.PUBACK) return
      p.inflight--
      published++
    })
    client.afterRead = schedulePump
    client.socket.on('drain', schedulePump)
    return p
  }))
  // Subscriptions can take effect after SUBACK on another node: probe until every publisher reaches the subscriber.
  const deadline = performance.now() + PROBE_TIMEOUT_MS
  while (probesSeen.size < publishers.length) {
    if (performance.now() > deadline) throw new Error(`the subscriber saw probes from ${probesSeen.size} of ${publishers.length} publishers after ${PROBE_TIMEOUT_MS} ms`)
    for (const p of publishers) p.client.socket.write(p.probe.bytes)
    await sleep(100)
  }
  await sleep(100)

  function schedulePump(): void {
    if (!running || pumpScheduled) return
    pumpScheduled = true
    setImmediate(pump)
  }
  function pump(): void {
    pumpScheduled = false
    if (!running) return
    for (const p of publishers) {
      // QoS 0 has no acknowledgement to wake the pump: write until the socket pushes back, then
      // wait for its 'drain'.
      while (!p.client.socket.writableNeedDrain) {
        const count = job.qos === 1 ? Math.min(PUBLISH_BATCH, job.inflightPerPublisher - p.inflight) : PUBLISH_BATCH
        if (count <= 0) break
        const size = p.data.bytes.length
        const out = Buffer.allocUnsafe(size * count)
        for (let m = 0; m < count; m++) {
          p.data.copyInto(out, m * size, p.nextId)
          p.nextId = p.nextId === 65_535 ? 1 : p.nextId + 1
        }
        if (job.qos === 1) p.inflight += count
        else published += count
        p.client.socket.write(out)
      }
    }
  }

  const started = performance.now()
  const samples: OpenLoopSample[] = []
  const sampler = setInterval(() => {
    const sample = { at: (performance.now() - started) / 1000, published, delivered }
    samples.push(sample)
    emit({ event: 'sample', sample })
  }, 1_000)
  running = true
  pump()
  await sleep(job.warmupMs)
  const startCpu = process.cpuUsage()
  const from = { at: performance.now(), published, delivered }
  await sleep(job.windowMs)
  const to = { at: performance.now(), published, delivered }
  const cpu = process.cpuUsage(startCpu)
  running = false
  const unacknowledged = publishers.reduce((sum, p) => sum + p.inflight, 0)
  // What was acknowledged must arrive; late PUBACKs of the last in-flight messages count too.
  // Or until nothing has arrived for a second: QoS 0 may have been dropped, and a loss shows as a shortfall.
  const drainUntil = performance.now() + job.drainMs
  let last = { delivered, at: performance.now() }
  while (performance.now() < drainUntil && (delivered < published || publishers.some((p) => p.inflight > 0))) {
    await sleep(50)
    if (delivered !== last.delivered) last = { delivered, at: performance.now() }
    else if (performance.now() - last.at > QUIET_MS) break
  }
  clearInterval(sampler)
  for (const c of [...publishers.map((p) => p.client), subscriber]) c.close()
  const seconds = (to.at - from.at) / 1000
  return {
    publishedPerSecond: (to.published - from.published) / seconds,
    deliveredPerSecond: (to.delivered - from.delivered) / seconds,
    samples,
    published,
    delivered,
    unacknowledged,
    generatorCpuPercent: ((cpu.user + cpu.system) / 10) / (to.at - from.at),
  }
}

const input = createInterface({ input: process.stdin })
const first = await input[Symbol.asyncIterator]().next()
if (first.done) throw new Error('the open-loop generator expects a job as one JSON line on stdin')
makeRealtime(process.pid)
const result = await run(JSON.parse(first.value) as OpenLoopJob)
emit({ event: 'result', result })
input.close()
process.exit(0)
