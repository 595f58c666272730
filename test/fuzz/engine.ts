import net from 'node:net'
import type { BrokerCoverage } from './coverage.js'
import type { Rng } from './mutate.js'
import type { Target } from './targets.js'

/*
 * The fuzzing loop, coverage-guided over a real broker process: batches of mutated inputs go to
 * the broker's sockets, several connections at a time; after each batch the broker's block coverage
 * is taken, and when a batch ran new blocks each of its inputs is run again alone to find the ones
 * that did, which join the corpus. The loop stops at its deadline or when the broker is harmed (it died or logged an error).
 */

/** Inputs per coverage measurement. */
const BATCH = 32
/** Connections in flight at once: most of them wait on LINGER_MS, not on a core. */
const CONCURRENCY = 16
/**
 * How long a connection stays open after its bytes were sent and half-closed, when the broker
 * keeps its side open (a session after a valid CONNECT, an upgraded WebSocket). On loopback the
 * broker has read the bytes long before.
 */
const LINGER_MS = 250

/** Sends `input` on a new connection to `port`, half-closes, and resolves once the broker closed it (or after LINGER_MS). */
export function sendInput(port: number, input: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    socket.on('connect', () => socket.end(input))
    // What the broker answers is read and dropped: a full receive buffer would stall it.
    socket.on('data', () => {})
    socket.on('end', () => socket.destroy())
    socket.on('error', () => { /* resets and refusals are answers too */ })
    socket.on('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

async function runAll(port: number, inputs: readonly Buffer[]): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < inputs.length) await sendInput(port, inputs[next++])
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, inputs.length) }, worker))
}

export interface BrokerUnderTest {
  readonly port: number
  readonly coverage: BrokerCoverage
  /** False once the process exited or logged an error. */
  unharmed(): boolean
}

export interface FuzzResult {
  readonly execs: number
  readonly seconds: number
  readonly corpus: Buffer[]
  /** Blocks first run by this target's inputs. */
  readonly newBlocks: number
  /** Inputs the target refused to send. */
  readonly skipped: number
  /** When the broker was harmed: the inputs in flight then and just before, one of which did it. */
  readonly suspects?: Buffer[]
}

export async function fuzz(target: Target, broker: BrokerUnderTest, rng: Rng, seconds: number, corpus: Buffer[]): Promise<FuzzResult> {
  const started = Date.now()
  const deadline = started + seconds * 1000
  let execs = 0
  let skipped = 0
  let newBlocks = 0
  let previous: Buffer[] = []
  const result = (suspects?: Buffer[]): FuzzResult => ({ execs, seconds: (Date.now() - started) / 1000, corpus, newBlocks, skipped, suspects })

  /**
   * Which inputs of a batch ran its new blocks, by halving: each half runs again and keeps the new
   * blocks it runs. A block that no half runs again came from something else (a timer) and is
   * dropped. About 2·log2(BATCH) runs find one input, not BATCH.
   */
  async function attribute(inputs: Buffer[], fresh: Set<string>): Promise<Buffer[] | 'harmed'> {
    if (inputs.length === 1) return inputs
    const half = inputs.length >> 1
    const found: Buffer[] = []
    for (const part of [inputs.slice(0, half), inputs.slice(half)]) {
      await runAll(broker.port, part)
      execs += part.length
      if (!broker.unharmed()) return 'harmed'
      const mine = new Set<string>()
      for (const key of await broker.coverage.hits()) if (fresh.delete(key)) mine.add(key)
      if (mine.size === 0) continue
      const inner = await attribute(part, mine)
      if (inner === 'harmed') return 'harmed'
      found.push(...inner)
    }
    return found
  }

  // The seeds run first and set the baseline.
  await runAll(broker.port, corpus)
  execs += corpus.length
  if (!broker.unharmed()) return result(corpus)
  newBlocks += (await broker.coverage.collect()).length

  while (Date.now() < deadline) {
    const batch: Buffer[] = []
    while (batch.length < BATCH) {
      // Newer corpus entries (the ones that found something last) are picked more often.
      const parent = corpus[rng.chance(0.5) ? corpus.length - 1 - rng.below(Math.min(corpus.length, 8)) : rng.below(corpus.length)]
      const child = target.mutate(parent, rng, { dictionary: target.dictionary, corpus, maxLength: target.maxLength })
      if (target.sendable(child)) batch.push(child)
      else skipped++
    }
    await runAll(broker.port, batch)
    execs += batch.length
    if (!broker.unharmed()) return result([...previous, ...batch])
    const fresh = new Set(await broker.coverage.collect())
    newBlocks += fresh.size
    if (fresh.size > 0) {
      const attributed = await attribute(batch, fresh)
      if (attributed === 'harmed') return result([...batch, ...previous])
      corpus.push(...attributed)
    }
    previous = batch
  }
  return result()
}
