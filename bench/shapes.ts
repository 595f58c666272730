import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { LeanClient, countPubacks, countPublishes, encodePublish } from './lean.js'
import type { Endpoint } from './wire.js'

/*
 * The throughput shapes, driven with the lean client (bench/lean.ts) and measured from /proc: the
 * delivered rate in a window, the broker's and the generator's CPU in that window (percent of one
 * core each), and the broker's CPU per delivered message.
 */

const PROBE = 0
const DATA = 1
const PROBE_INTERVAL_MS = 100
const PROBE_TIMEOUT_MS = 15_000
const DRAIN_TIMEOUT_MS = 15_000
const CONNECT_CONCURRENCY = 100
const LOCAL_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']

export interface Window {
  readonly warmupMs: number
  readonly windowMs: number
  /** Broker processes whose CPU time is read at the edges of the window. */
  readonly brokerPids: readonly number[]
}

export interface ShapeResult {
  readonly deliveredPerSecond: number
  readonly sent: number
  readonly expected: number
  readonly received: number
  readonly windowMs: number
  /** The generator process's CPU use, percent of one core. */
  readonly generatorCpuPercent: number
  /**
   * How busy the generator's cores were, by anything (the generator and its neighbours on a shared
   * machine), percent: a starved generator limits the rate as surely as a busy one.
   */
  readonly generatorCoreBusyPercent: number
  readonly brokerCpuPercent: number
  readonly brokerWaitPercent: number
  /** Time the generator's main thread waited for its core while runnable, percent of the window. */
  readonly generatorWaitPercent: number
  readonly brokerCpuMicrosPerMessage: number
}

/** CPU time of the processes, seconds (utime + stime in /proc/PID/stat, 100 ticks per second). */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(fields[11]) + Number(fields[12])
  }
  return ticks / 100
}

/** The cores this process may run on (Cpus_allowed_list in /proc/self/status: `1`, `0-1`, `1,3`). */
function ownCores(): number[] {
  const list = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? ''
  return list.split(',').flatMap((range) => {
    const [from, to = from] = range.split('-').map(Number)
    return Array.from({ length: to - from + 1 }, (_, i) => from + i)
  })
}

/** Busy and total jiffies of `cores`, summed (/proc/stat: idle and iowait are the idle fields). */
function coreJiffies(cores: readonly number[]): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const match = /^cpu(\d+) (.*)$/.exec(line)
    if (!match || !cores.includes(Number(match[1]))) continue
    const fields = match[2].trim().split(/\s+/).slice(0, 8).map(Number)
    const sum = fields.reduce((a, b) => a + b, 0)
    total += sum
    busy += sum - fields[3] - fields[4]
  }
  return { busy, total }
}

/** Time the processes' main threads waited for a CPU while runnable, seconds (/proc/PID/schedstat, ns). */
function runQueueSeconds(pids: readonly number[]): number {
  let ns = 0
  for (const pid of pids) ns += Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1])
  return ns / 1e9
}

function payload(kind: number, bytes: number, marker = 0): Buffer {
  const buf = Buffer.alloc(Math.max(bytes, 4))
  buf[0] = kind
  buf.writeUInt16BE(marker, 1)
  return buf
}

/** Connects `count` clients, `CONNECT_CONCURRENCY` at a time, from several source addresses. */
async function connectMany(count: number, endpoint: (i: number) => Endpoint, clientId: (i: number) => string): Promise<LeanClient[]> {
  const clients = new Array<LeanClient>(count)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      clients[i] = await LeanClient.connect(endpoint(i), clientId(i), count > 1_000 ? LOCAL_ADDRESSES[i % LOCAL_ADDRESSES.length] : undefined)
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, count) }, worker))
  return clients
}

/**
 * Sends probes (`send` gets the ones still unheard) until `heard` reaches `due`; a new round goes
 * out only once the last one stopped bringing answers, so that a slow broker is never buried
 * under rounds of probes queued ahead of the counted messages.
 */
async function probeUntilHeard(due: number, heard: () => number, send: () => void, what: () => string): Promise<void> {
  const deadline = performance.now() + PROBE_TIMEOUT_MS
  while (heard() < due) {
    if (performance.now() > deadline) throw new Error(`${what()} after ${PROBE_TIMEOUT_MS} ms of probing`)
    send()
    let before = -1
    while (heard() < due && heard() !== before) {
      before = heard()
      await sleep(PROBE_INTERVAL_MS * 3)
    }
  }
  // Let probes still on their way arrive before counting starts.
  await sleep(PROBE_INTERVAL_MS)
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) return false
    await sleep(10)
  }
  return true
}

/** Measures the window once `start` has set the load going; `stop` ends it and the rest drains. */
async function measure(window: Window, delivered: () => number, stop: () => void): Promise<Omit<ShapeResult, 'sent' | 'expected' | 'received'>> {
  await sleep(window.warmupMs)
  const startCount = delivered()
  const startTime = performance.now()
  const startCpu = process.cpuUsage()
  const startBrokerCpu = cpuSeconds(window.brokerPids)
  const startBrokerWait = runQueueSeconds(window.brokerPids)
  const startWait = runQueueSeconds([process.pid])
  const cores = ownCores()
  const startCores = coreJiffies(cores)
  await sleep(window.windowMs)
  const count = delivered() - startCount
  const windowMs = performance.now() - startTime
  const cpu = process.cpuUsage(startCpu)
  const brokerCpu = cpuSeconds(window.brokerPids) - startBrokerCpu
  const brokerWait = runQueueSeconds(window.brokerPids) - startBrokerWait
  const wait = runQueueSeconds([process.pid]) - startWait
  const endCores = coreJiffies(cores)
  stop()
  return {
    deliveredPerSecond: (count * 1000) / windowMs,
    windowMs,
    generatorCpuPercent: (cpu.user + cpu.system) / 10 / windowMs,
    generatorCoreBusyPercent: (100 * (endCores.busy - startCores.busy)) / Math.max(endCores.total - startCores.total, 1),
    brokerCpuPercent: (brokerCpu * 100_000) / windowMs,
    brokerWaitPercent: (brokerWait * 100_000) / windowMs,
    generatorWaitPercent: (wait * 100_000) / windowMs,
    brokerCpuMicrosPerMessage: (brokerCpu * 1e6) / Math.max(count, 1),
  }
}

export interface PubSubOptions extends Window {
  readonly qos: 0 | 1
  readonly publishers: number
  readonly subscribers: number
  /** Publisher i connects to publish[i % length], subscriber i to subscribe[i % length]. */
  readonly publish: readonly Endpoint[]
  readonly subscribe: readonly Endpoint[]
  readonly payloadBytes: number
  /** PUBLISH packets per write: 1 is a device fleet (each device's packet arrives on its own). */
  readonly perWrite: number
  /** QoS 1: unacknowledged PUBLISH packets per publisher. */
  readonly inflight: number
  /** Messages the publishers may be ahead of the slowest subscriber: bounds the queues inside the broker. */
  readonly maxAhead: number
  /** See LeanClient.readPauseMs. */
  readonly readPauseMs: number
}

/** `publishers` clients publish to `fleet/<i>`; each of `subscribers` clients holds `fleet/+`. */
export async function runPubSub(o: PubSubOptions): Promise<ShapeResult> {
  const received = new Array<number>(o.subscribers).fill(0)
  let sent = 0
  let publishing = false
  let scheduled = false
  let turn = 0
  const probed = Array.from({ length: o.subscribers }, () => new Set<number>())
  const subscribers = await connectMany(o.subscribers, (i) => o.subscribe[i % o.subscribe.length], (i) => `bench-sub-${i}`)
  await Promise.all(subscribers.map(async (subscriber, i) => {
    countPublishes(subscriber, (_first, buf, at) => {
      if (buf[at] === DATA) received[i]++
      else probed[i].add(buf.readUInt16BE(at + 1))
    })
    const afterRead = subscriber.afterRead
    subscriber.afterRead = () => {
      afterRead()
      schedule()
    }
    await subscriber.subscribe('fleet/+', o.qos)
  }))

  const clients = await connectMany(o.publishers, (i) => o.publish[i % o.publish.length], (i) => `bench-pub-${i}`)
  const publishers = clients.map((client, i) => {
    const data = encodePublish(`fleet/${i}`, payload(DATA, o.payloadBytes), o.qos)
    const p = { client, data, probe: encodePublish(`fleet/${i}`, payload(PROBE, o.payloadBytes, i), 0).bytes, inflight: 0, nextId: 1 }
    countPubacks(client, () => {
      p.inflight--
      schedule()
    })
    client.socket.on('drain', schedule)
    return p
  })
  // Subscriptions may take effect after SUBACK: probe until every subscriber hears every publisher.
  const heardAll = (): number => probed.reduce((sum, heard) => sum + heard.size, 0)
  await probeUntilHeard(o.publishers * o.subscribers, heardAll, () => {
    publishers.forEach((p, i) => { if (probed.some((heard) => !heard.has(i))) p.client.socket.write(p.probe) })
  }, () => `${probed.filter((heard) => heard.size < o.publishers).length} of ${o.subscribers} subscribers still miss some of ${o.publishers} publishers`)
  for (const subscriber of subscribers) subscriber.readPauseMs = o.readPauseMs

  function schedule(): void {
    if (!publishing || scheduled) return
    scheduled = true
    setImmediate(pump)
  }
  function pump(): void {
    scheduled = false
    if (!publishing) return
    let slowest = received[0]
    for (let i = 1; i < received.length; i++) if (received[i] < slowest) slowest = received[i]
    turn = (turn + 1) % publishers.length
    const sentBefore = sent
    for (let k = 0; k < publishers.length; k++) {
      const room = o.maxAhead - (sent - slowest)
      // The subscriber's next read schedules the next pass.
      if (room <= 0) return
      const p = publishers[(turn + k) % publishers.length]
      if (p.client.socket.writableNeedDrain) continue
      let count = Math.min(o.perWrite, room)
      if (o.qos === 1) count = Math.min(count, o.inflight - p.inflight)
      if (count <= 0) continue
      let out: Buffer
      if (o.qos === 0 && count === 1) {
        out = p.data.bytes
      } else if (o.qos === 1 && o.inflight === 1) {
        // The previous copy was acknowledged, so it has left this process: patch it in place.
        out = p.data.bytes
        out.writeUInt16BE(p.nextId, p.data.idOffset)
        p.nextId = p.nextId === 65_535 ? 1 : p.nextId + 1
      } else {
        const size = p.data.bytes.length
        out = Buffer.allocUnsafe(size * count)
        for (let m = 0; m < count; m++) {
          p.data.bytes.copy(out, m * size)
          if (o.qos === 1) {
            out.writeUInt16BE(p.nextId, m * size + p.data.idOffset)
            p.nextId = p.nextId === 65_535 ? 1 : p.nextId + 1
          }
        }
      }
      if (o.qos === 1) p.inflight += count
      sent += count
      p.client.socket.write(out)
    }
    // One pass over the publishers per turn of the event loop, and another next turn while there
    // is room: a publisher's packets leave in separate turns, as separate reads for the broker.
    if (sent > sentBefore) schedule()
  }

  const total = (): number => {
    let sum = 0
    for (const r of received) sum += r
    return sum
  }
  publishing = true
  pump()
  const measured = await measure(o, total, () => { publishing = false })
  await waitFor(() => total() >= sent * o.subscribers && publishers.every((p) => p.inflight === 0), DRAIN_TIMEOUT_MS)
  for (const c of [...subscribers, ...clients]) c.close()
  return { ...measured, sent, expected: sent * o.subscribers, received: total() }
}

export interface DownlinkOptions extends Window {
  readonly qos: 0 | 1
  readonly devices: number
  readonly publish: Endpoint
  readonly subscribe: readonly Endpoint[]
  readonly payloadBytes: number
  /** Messages the backend may be ahead of the devices. */
  readonly maxAhead: number
  /** PUBLISH packets per backend write. */
  readonly perWrite: number
  /** See LeanClient.readPauseMs. */
  readonly readPauseMs: number
}

/** One backend publishes to `cmd/<id>` for each of `devices` devices, each subscribed to its own topic. */
export async function runDownlink(o: DownlinkOptions): Promise<ShapeResult> {
  let received = 0
  let sent = 0
  let publishing = false
  let scheduled = false
  const probed = new Set<number>()
  const devices = await connectMany(o.devices, (i) => o.subscribe[i % o.subscribe.length], (i) => `bench-dev-${i}`)
  for (const device of devices) {
    countPublishes(device, (_first, buf, at) => {
      if (buf[at] === DATA) received++
      else probed.add(buf.readUInt16BE(at + 1))
    })
    const after = device.afterRead
    device.afterRead = () => {
      after()
      schedule()
    }
  }
  await Promise.all(devices.map((d, i) => d.subscribe(`cmd/${i}`, o.qos)))
  const backend = await LeanClient.connect(o.publish, 'bench-backend')
  let inflight = 0
  countPubacks(backend, () => {
    inflight--
    schedule()
  })
  backend.socket.on('drain', schedule)

  // One buffer with a PUBLISH to every device in turn; QoS 1 copies get fresh packet identifiers.
  const packets = Array.from({ length: o.devices }, (_, i) => encodePublish(`cmd/${i}`, payload(DATA, o.payloadBytes), o.qos))
  const all = Buffer.concat(packets.map((p) => p.bytes))
  const offsets = [0]
  for (const p of packets) offsets.push(offsets[offsets.length - 1] + p.bytes.length)
  const probes = Array.from({ length: o.devices }, (_, i) => encodePublish(`cmd/${i}`, payload(PROBE, o.payloadBytes, i % 65_536), 0).bytes)
  await probeUntilHeard(Math.min(o.devices, 65_536), () => probed.size, () => {
    backend.socket.write(Buffer.concat(probes.filter((_, i) => !probed.has(i % 65_536))))
  }, () => `${probed.size} of ${o.devices} devices heard the backend`)
  for (const device of devices) device.readPauseMs = o.readPauseMs

  let next = 0
  let nextId = 1
  function schedule(): void {
    if (!publishing || scheduled) return
    scheduled = true
    setImmediate(pump)
  }
  function pump(): void {
    scheduled = false
    if (!publishing) return
    while (!backend.socket.writableNeedDrain) {
      let count = Math.min(o.perWrite, o.maxAhead - (sent - received), o.devices - next)
      if (o.qos === 1) count = Math.min(count, o.maxAhead - inflight)
      if (count <= 0) return
      // QoS 0 packets never change: written straight from the shared buffer.
      const out = o.qos === 0 ? all.subarray(offsets[next], offsets[next + count]) : Buffer.from(all.subarray(offsets[next], offsets[next + count]))
      if (o.qos === 1) {
        for (let m = 0; m < count; m++) {
          out.writeUInt16BE(nextId, offsets[next + m] - offsets[next] + packets[next + m].idOffset)
          nextId = nextId === 65_535 ? 1 : nextId + 1
        }
        inflight += count
      }
      next = (next + count) % o.devices
      sent += count
      backend.socket.write(out)
    }
  }

  publishing = true
  pump()
  const measured = await measure(o, () => received, () => { publishing = false })
  await waitFor(() => received >= sent && inflight === 0, DRAIN_TIMEOUT_MS)
  for (const c of [backend, ...devices]) c.close()
  return { ...measured, sent, expected: sent, received }
}
