import type { Endpoint } from './wire.js'

/*
 * What the bench driver asks the load generator to do, and what it answers. The generator is a
 * separate process pinned to its own core; these travel as one JSON line each way (see
 * generator.ts). Publishers and subscribers each get their own endpoints, so a scenario can
 * publish on one node and subscribe on another.
 */

/** Every subscriber subscribes to every publisher's topic: each published message is due once per subscriber. */
export interface ThroughputJob {
  readonly kind: 'throughput'
  readonly qos: 0 | 1
  readonly publishers: number
  readonly subscribers: number
  /** Publisher i connects to publish[i % length]. */
  readonly publish: readonly Endpoint[]
  /** Subscriber i connects to subscribe[i % length]. */
  readonly subscribe: readonly Endpoint[]
  readonly payloadBytes: number
  readonly warmupMs: number
  readonly windowMs: number
  /** Unacknowledged QoS 1 PUBLISH packets per publisher. */
  readonly inflightPerPublisher: number
  /**
   * Messages the publishers may be ahead of the slowest subscriber. Bounds the queues inside the
   * broker, so the bench measures the rate a broker sustains without loss rather than how much it
   * buffers (QoS 0 has no acknowledgement to pace publishers otherwise).
   */
  readonly maxAhead: number
  /** Broker processes whose CPU time the generator reads at the edges of the window. */
  readonly brokerPids: readonly number[]
}

export interface ThroughputResult {
  readonly kind: 'throughput'
  /** Messages delivered to subscribers per second during the window (all subscribers together). */
  readonly deliveredPerSecond: number
  /** Messages published (after the readiness probe). */
  readonly sent: number
  /** sent × subscribers. */
  readonly expected: number
  /** Messages the subscribers received, all together. */
  readonly received: number
  /** Real length of the measuring window, ms. */
  readonly windowMs: number
  /** The generator's own CPU use in the window, percent of one core: near 100, it is the bottleneck. */
  readonly generatorCpuPercent: number
  /** The brokers' CPU use in the window, percent of one core. */
  readonly brokerCpuPercent: number
  /**
   * Time the broker was runnable but waited for its core while other processes ran, percent of
   * the window: high, and the rate says more about the machine's load than about the broker.
   */
  readonly brokerWaitPercent: number
  /**
   * Broker CPU time per delivered message in the window, µs. Unlike the rate, it barely moves when
   * other processes take turns on the broker's core, so it cross-checks a ratio on a busy machine.
   */
  readonly brokerCpuMicrosPerMessage: number
}

/** One publisher and one subscriber, QoS 1 both ways, at a fixed rate. */
export interface LatencyJob {
  readonly kind: 'latency'
  readonly publish: Endpoint
  readonly subscribe: Endpoint
  /** Messages per second. */
  readonly rate: number
  readonly payloadBytes: number
  /** From the first message to the measured (steady) window. */
  readonly warmupMs: number
  readonly windowMs: number
  /** From the first message to a second window of `windowMs`, reported as `firstP99Ms`. */
  readonly firstWindowFromMs: number
}

export interface LatencyResult {
  readonly kind: 'latency'
  readonly p50Ms: number
  readonly p99Ms: number
  /** p99 of the messages sent in the first window, while the broker is still warming up. */
  readonly firstP99Ms: number
  /** Latencies recorded in the window. */
  readonly samples: number
  readonly sent: number
  readonly expected: number
  readonly received: number
}

/** Opens idle connections and holds them until the driver has measured the broker. */
export interface IdleJob {
  readonly kind: 'idle'
  readonly connections: number
  readonly endpoints: readonly Endpoint[]
  /** Source addresses, used in turn, so 10,000 connections never run one address out of ephemeral ports. */
  readonly localAddresses: readonly string[]
  /** Connection attempts in progress at once. */
  readonly concurrency: number
  /** Client ids are `<prefix>-<i>` (default `bench-idle`): two jobs held at once need their own. */
  readonly clientIdPrefix?: string
}

export interface IdleResult {
  readonly kind: 'idle'
  readonly expected: number
  readonly connected: number
  /** Connections per second while opening them. */
  readonly connectsPerSecond: number
}

export type Job = ThroughputJob | LatencyJob | IdleJob
export type JobResult = ThroughputResult | LatencyResult | IdleResult

/** Lines the generator prints on stdout. */
export type GeneratorEvent =
  | { readonly event: 'holding'; readonly connected: number }
  | { readonly event: 'result'; readonly result: JobResult }

/** The line the driver sends when it has measured the held connections. */
export const RELEASE = 'release'
