import { once } from 'node:events'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { cpuSeconds, rssBytes, spawnPinned, type RunningBroker } from './brokers.js'
import type { OpenLoopEvent, OpenLoopJob, OpenLoopResult } from './open-loop-generator.js'
import type { Scenario, ScenarioContext, Target } from './scenarios.js'

/*
 * Open-loop scenarios: publishers that do not wait for the subscriber (bench/open-loop-generator.ts),
 * beside the closed-loop ones in scenarios.ts whose generator stays at most 2,000 messages ahead.
 * Devices are not paced by subscribers; a broker that acknowledges faster than it delivers shows
 * it here as published ≫ delivered and a growing RSS, where the closed loop cannot see it.
 *
 * Each scenario reports the delivered rate (the ratio to the reference broker is the target), the
 * published rate over the delivered rate in the same window (a broker that owns more than it
 * delivers has a ratio above 1), and the peak RSS of the broker's largest process, sampled every
 * 100 ms through the whole run.
 */

const GENERATOR = resolve(import.meta.dirname, 'open-loop-generator.ts')
const PAYLOAD_BYTES = 64
/** As a device with a modest Receive Maximum keeps. */
const INFLIGHT_PER_PUBLISHER = 64
const RSS_SAMPLE_MS = 100
/** Acknowledged messages must reach the subscriber within this after publishing stops. */
const DRAIN_MS = 15_000
const MiB = 1024 * 1024
/**
 * The open loop's warm-up, in units of the profile's: with publishers unpaced, the first seconds
 * fill every socket buffer on the way (for QoS 0, megabytes per publisher) and a JIT-compiled
 * broker is still compiling; the window measures the steady state after that.
 */
const WARMUP_FACTOR = 5

async function runOpenLoop(job: OpenLoopJob, cpus: string, pids: readonly number[]): Promise<{ result: OpenLoopResult; peakRss: number[] }> {
  const peakRss = pids.map(() => 0)
  const sampleRss = (): void => {
    pids.forEach((pid, i) => {
      try {
        peakRss[i] = Math.max(peakRss[i], rssBytes(pid))
      } catch {
        // The process exited: its stop reports why.
      }
    })
  }
  const sampler = setInterval(sampleRss, RSS_SAMPLE_MS)
  const child = spawnPinned(cpus, process.execPath, ['--import', 'tsx', GENERATOR])
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-8_192) })
  const exited = once(child, 'exit')
  child.stdin?.write(`${JSON.stringify(job)}\n`)
  let result: OpenLoopResult | undefined
  try {
    for await (const line of createInterface({ input: child.stdout! })) {
      const event = JSON.parse(line) as OpenLoopEvent
      if (event.event === 'result') result = event.result
      else if (process.env.BENCH_VERBOSE) {
        const rss = pids.map((pid, i) => `${pid}:${(peakRss[i] / MiB).toFixed(0)}MB`).join(' ')
        process.stderr.write(`  t=${event.sample.at.toFixed(1)}s published ${event.sample.published} delivered ${event.sample.delivered} peak RSS ${rss}\n`)
      }
    }
  } finally {
    clearInterval(sampler)
  }
  sampleRss()
  const [code] = (await exited) as [number | null]
  if (code !== 0 || !result) throw new Error(`the open-loop generator failed (exit ${code}):\n${stderr}`)
  return { result, peakRss }
}

function openLoop(id: string, title: string, qos: 0 | 1, targets: Record<string, Target>, subscriberClean = true): Scenario {
  const ratioId = `${id}_published_per_delivered`
  const rssId = `${id}_peak_rss`
  return {
    id,
    title,
    metrics: [
      { id, label: `${title}, delivered`, unit: 'msg/s', targets },
      { id: `${id}_published`, label: `${title}, published`, unit: 'msg/s' },
      { id: ratioId, label: `${title}, published ÷ delivered`, unit: '×', targets: { 'fleetmq-cluster': { kind: 'absolute', op: '<=', value: 1.25 } } },
      { id: rssId, label: `${title}, peak RSS of the largest broker process`, unit: 'MiB', targets: { 'fleetmq-cluster': { kind: 'absolute', op: '<=', value: 300 } } },
    ],
    async run(broker: RunningBroker, ctx: ScenarioContext) {
      const cpu = (): number => broker.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0)
      const cpuBefore = cpu()
      const started = performance.now()
      const { result, peakRss } = await runOpenLoop({
        qos,
        publishers: 8,
        publish: broker.publish,
        subscribe: broker.subscribe[0],
        payloadBytes: PAYLOAD_BYTES,
        inflightPerPublisher: INFLIGHT_PER_PUBLISHER,
        warmupMs: ctx.profile.warmupMs * WARMUP_FACTOR,
        windowMs: ctx.profile.windowMs,
        drainMs: DRAIN_MS,
        subscriberClean,
      }, ctx.generatorCpus, broker.pids)
      const brokerCpuPercent = ((cpu() - cpuBefore) * 100_000) / (performance.now() - started)
      return {
        metrics: {
          [id]: result.deliveredPerSecond,
          [`${id}_published`]: result.publishedPerSecond,
          [ratioId]: result.publishedPerSecond / Math.max(result.deliveredPerSecond, 1),
          [rssId]: Math.max(...peakRss) / MiB,
        },
        // QoS 1: every acknowledged message is due; QoS 0 may drop under overload, so only what arrived counts.
        expected: qos === 1 ? result.published : result.delivered,
        received: result.delivered,
        brokerCpuPercent,
        generatorCpuPercent: result.generatorCpuPercent,
      }
    },
  }
}

export const OPEN_LOOP_SCENARIOS: readonly Scenario[] = [
  openLoop('open_fanin_qos1', 'open-loop fan-in QoS 1 (8 → 1)', 1, { 'fleetmq-cluster': { kind: 'ratio', op: '>=', value: 0.5 } }),
  openLoop('open_fanin_qos0', 'open-loop fan-in QoS 0 (8 → 1)', 0, { 'fleetmq-cluster': { kind: 'ratio', op: '>=', value: 0.4 } }),
  // A persistent subscriber: every message is stored in its session (Redis for the cluster) until acknowledged.
  openLoop('open_fanin_qos1_session', 'open-loop fan-in QoS 1 to a persistent session (8 → 1)', 1, {}, false),
]
