import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { performance } from 'node:perf_hooks'
import { runDownlink, runPubSub } from './shapes.js'
import { PacketType, PublishTemplate, WireClient, publishLayout, writePuback, type Endpoint } from './wire.js'
import {
  RELEASE,
  type GeneratorEvent,
  type IdleJob,
  type IdleResult,
  type Job,
  type JobResult,
  type LatencyJob,
  type LatencyResult,
} from './jobs.js'

/*
 * The load generator: a process of its own (the driver pins it to another core than the broker's)
 * that reads one job as a JSON line on stdin, runs it and prints the result as a JSON line.
 * Payloads start with a kind byte, so readiness probes are never counted as data, and a
 * float64 send time (performance.now()), so latency needs no clock shared between processes.
 */

const PROBE = 0
const DATA = 1
const PROBE_INTERVAL_MS = 100
const PROBE_TIMEOUT_MS = 15_000
const DRAIN_TIMEOUT_MS = 15_000

const input = createInterface({ input: process.stdin })
const lines = input[Symbol.asyncIterator]()

function emit(event: GeneratorEvent): void {
  process.stdout.write(`${JSON.stringify(event)}\n`)
}

function payload(kind: number, bytes: number): Buffer {
  const buf = Buffer.alloc(Math.max(bytes, 9))
  buf[0] = kind
  return buf
}

const endpointFor = (list: readonly Endpoint[], index: number): Endpoint => list[index % list.length]

async function waitFor(condition: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`${what()} after ${timeoutMs} ms`)
    await sleep(10)
  }
}

/**
 * Publishes probes until every subscriber has seen one from every publisher: subscriptions can take
 * effect after SUBACK (on another node, say), and no counted message may be published before.
 */
async function probeUntilReady(publishers: readonly { client: WireClient; probe: PublishTemplate }[], seen: readonly Set<number>[]): Promise<void> {
  const ready = (): boolean => seen.every((s) => s.size === publishers.length)
  const deadline = performance.now() + PROBE_TIMEOUT_MS
  while (!ready()) {
    if (performance.now() > deadline) {
      const missing = seen.filter((s) => s.size < publishers.length).length
      throw new Error(`${missing} of ${seen.length} subscribers still miss messages from some publishers after ${PROBE_TIMEOUT_MS} ms of probing`)
    }
    for (const p of publishers) p.client.socket.write(p.probe.bytes)
    await sleep(PROBE_INTERVAL_MS)
  }
  // Let probes still on their way arrive before counting starts.
  await sleep(PROBE_INTERVAL_MS)
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

async function runLatency(job: LatencyJob): Promise<LatencyResult> {
  const latencies: number[] = []
  const probesSeen = [new Set<number>()]
  let received = 0
  let measureFrom = Infinity
  let measureUntil = Infinity
  const firstLatencies: number[] = []
  let firstFrom = Infinity
  let firstUntil = Infinity
  const subscriber = await WireClient.connect(job.subscribe, { clientId: 'bench-latency-sub' })
  /*
   * Every message of a read arrived when the read did: the time is taken once, before any frame
   * is handled, and the PUBACKs of a read leave in one write after the last frame. Stamping each
   * frame as it is scanned, after writing the PUBACKs of the frames before it (one syscall each),
   * charged a broker that sends several messages per write (FleetMQ coalesces its writes per
   * event-loop turn) with the generator's own PUBACK syscalls: up to ≈ 15 µs per earlier frame.
   */
  let readAt = 0
  let acks: Buffer[] = []
  subscriber.socket.prependListener('data', () => { readAt = performance.now() })
  subscriber.afterRead = () => {
    if (acks.length === 0) return
    subscriber.socket.write(acks.length === 1 ? acks[0] : Buffer.concat(acks))
    acks = []
  }
  subscriber.onFrame((first, buf, start) => {
    if (first >> 4 !== PacketType.PUBLISH) return
    const now = readAt
    const { payloadStart, packetId } = publishLayout(first, buf, start)
    if (packetId) {
      const ack = Buffer.allocUnsafe(4)
      writePuback(ack, 0, packetId)
      acks.push(ack)
    }
    if (buf[payloadStart] !== DATA) {
      probesSeen[0].add(buf[payloadStart + 1])
      return
    }
    received++
    const sentAt = buf.readDoubleLE(payloadStart + 1)
    if (sentAt >= measureFrom && sentAt < measureUntil) latencies.push(now - sentAt)
    if (sentAt >= firstFrom && sentAt < firstUntil) firstLatencies.push(now - sentAt)
  })
  await subscriber.subscribe('bench/+', 1)

  const client = await WireClient.connect(job.publish, { clientId: 'bench-latency-pub' })
  const template = new PublishTemplate('bench/0', payload(DATA, job.payloadBytes), 1)
  let inflight = 0
  client.onFrame((first) => {
    if (first >> 4 === PacketType.PUBACK) inflight--
  })
  await probeUntilReady([{ client, probe: new PublishTemplate('bench/0', payload(PROBE, job.payloadBytes), 0) }], probesSeen)

  let sent = 0
  let nextId = 1
  const start = performance.now()
  measureFrom = start + job.warmupMs
  measureUntil = measureFrom + job.windowMs
  firstFrom = start + job.firstWindowFromMs
  firstUntil = firstFrom + job.windowMs
  // Paced by the clock, not by the timer: a late tick sends what is due, so the rate holds.
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now()
      if (now >= measureUntil) {
        clearInterval(tick)
        resolve()
        return
      }
      const due = Math.floor(((now - start) * job.rate) / 1000) - sent
      for (let m = 0; m < due; m++) {
        const packet = Buffer.allocUnsafe(template.bytes.length)
        template.copyInto(packet, 0, nextId)
        packet.writeDoubleLE(performance.now(), template.payloadOffset + 1)
        nextId = nextId === 65_535 ? 1 : nextId + 1
        inflight++
        sent++
        client.socket.write(packet)
      }
    }, 5)
  })
  await waitFor(() => received >= sent && inflight === 0, DRAIN_TIMEOUT_MS, () => `received ${received} of ${sent}`).catch(() => undefined)
  client.close()
  subscriber.close()
  latencies.sort((a, b) => a - b)
  firstLatencies.sort((a, b) => a - b)
  return { kind: 'latency', p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), firstP99Ms: percentile(firstLatencies, 99), samples: latencies.length, sent, expected: sent, received }
}

async function runIdle(job: IdleJob): Promise<IdleResult> {
  const clients: WireClient[] = []
  let next = 0
  const started = performance.now()
  const worker = async (): Promise<void> => {
    while (next < job.connections) {
      const i = next++
      clients.push(await WireClient.connect(endpointFor(job.endpoints, i), {
        clientId: `${job.clientIdPrefix ?? 'bench-idle'}-${i}`,
        localAddress: job.localAddresses[i % job.localAddresses.length],
        // Longer than the measurement takes, so no client needs PINGREQ while held.
        keepalive: 300,
      }))
    }
  }
  await Promise.all(Array.from({ length: Math.min(job.concurrency, job.connections) }, worker))
  const connectsPerSecond = (clients.length * 1000) / (performance.now() - started)
  emit({ event: 'holding', connected: clients.length })
  const reply = await lines.next()
  if (reply.done || reply.value.trim() !== RELEASE) throw new Error(`expected "${RELEASE}" from the driver, got ${JSON.stringify(reply.value)}`)
  const connected = clients.filter((c) => !c.socket.destroyed).length
  for (const c of clients) c.socket.destroy()
  return { kind: 'idle', expected: job.connections, connected, connectsPerSecond }
}

function run(job: Job): Promise<JobResult> {
  switch (job.kind) {
    case 'throughput':
      return runPubSub(job).then((result) => ({ kind: 'throughput', ...result }))
    case 'downlink':
      return runDownlink(job).then((result) => ({ kind: 'downlink', ...result }))
    case 'latency':
      return runLatency(job)
    case 'idle':
      return runIdle(job)
  }
}

const first = await lines.next()
if (first.done) throw new Error('the generator expects a job as one JSON line on stdin')
const result = await run(JSON.parse(first.value) as Job)
emit({ event: 'result', result })
input.close()
process.exit(0)
