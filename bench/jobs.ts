import type { DownlinkOptions, PubSubOptions, ShapeResult } from './shapes.js'
import type { Endpoint } from './wire.js'

/*
 * What the bench driver asks the load generator to do, and what it answers. The generator is a
 * separate process pinned to its own core; these travel as one JSON line each way (see
 * generator.ts). Publishers and subscribers each get their own endpoints, so a scenario can
 * publish on one node and subscribe on another.
 */

/**
 * `publishers` clients publish to `fleet/<i>`, and each of `subscribers` clients holds `fleet/+`:
 * every published message is due once per subscriber (bench/shapes.ts runs it).
 */
export interface ThroughputJob extends PubSubOptions {
  readonly kind: 'throughput'
}

/** A backend publishes to `cmd/<id>`, one subscription per device (bench/shapes.ts runs it). */
export interface DownlinkJob extends DownlinkOptions {
  readonly kind: 'downlink'
}

/** The rate in the window, each side's CPU and the broker's CPU per message (bench/shapes.ts). */
export interface ThroughputResult extends ShapeResult {
  readonly kind: 'throughput' | 'downlink'
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

export type Job = ThroughputJob | DownlinkJob | LatencyJob | IdleJob
export type JobResult = ThroughputResult | LatencyResult | IdleResult

/** Lines the generator prints on stdout. */
export type GeneratorEvent =
  | { readonly event: 'holding'; readonly connected: number }
  | { readonly event: 'result'; readonly result: JobResult }

/** The line the driver sends when it has measured the held connections. */
export const RELEASE = 'release'
