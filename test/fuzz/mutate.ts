/*
 * Byte-level mutations in the manner of libFuzzer's MutationDispatcher (flip, insert, erase, copy,
 * splice, dictionary words, interesting integers), driven by a seeded generator so that a run can
 * be repeated with FUZZ_SEED. The targets add structure-aware mutations on top.
 */

/** xorshift32: fast, seedable, good enough to pick mutations. */
export class Rng {
  private state: number

  constructor(seed: number) {
    this.state = (seed >>> 0) || 0x9e3779b9
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    let x = this.state
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.state = x >>> 0
    return n <= 1 ? 0 : this.state % n
  }

  chance(p: number): boolean {
    return this.below(1_000_000) < p * 1_000_000
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) out[i] = this.below(256)
    return out
  }
}

/** Values that sit on the boundaries parsers check (lengths, variable-length integers, flags). */
const INTERESTING_8 = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x0f, 0x10, 0x20, 0x40, 0x3f]
const INTERESTING_16 = [0x0000, 0x0001, 0x007f, 0x0080, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xfffe, 0xffff]

export type Mutator = (input: Buffer, rng: Rng, ctx: MutationContext) => Buffer

export interface MutationContext {
  /** Words of the target's language (tokens, header names, property ids): libFuzzer's -dict. */
  readonly dictionary: readonly Buffer[]
  /** Other corpus entries, for crossover. */
  readonly corpus: readonly Buffer[]
  /** Longest input worth sending. */
  readonly maxLength: number
}

const at = (input: Buffer, rng: Rng): number => rng.below(input.length + 1)

const byteMutators: Mutator[] = [
  // Flip one bit.
  (input, rng) => {
    if (input.length === 0) return input
    const out = Buffer.from(input)
    out[rng.below(out.length)] ^= 1 << rng.below(8)
    return out
  },
  // Replace a byte with a random or an interesting one.
  (input, rng) => {
    if (input.length === 0) return input
    const out = Buffer.from(input)
    out[rng.below(out.length)] = rng.chance(0.5) ? rng.pick(INTERESTING_8) : rng.below(256)
    return out
  },
  // Overwrite two bytes with an interesting 16-bit value (lengths, packet ids, ports).
  (input, rng) => {
    if (input.length < 2) return input
    const out = Buffer.from(input)
    out.writeUInt16BE(rng.pick(INTERESTING_16), rng.below(out.length - 1))
    return out
  },
  // Add or subtract a little from a byte (a length off by a few).
  (input, rng) => {
    if (input.length === 0) return input
    const out = Buffer.from(input)
    const i = rng.below(out.length)
    out[i] = (out[i] + rng.below(9) - 4) & 0xff
    return out
  },
  // Insert random bytes.
  (input, rng) => {
    const i = at(input, rng)
    return Buffer.concat([input.subarray(0, i), rng.bytes(1 + rng.below(rng.chance(0.8) ? 4 : 64)), input.subarray(i)])
  },
  // Erase a range.
  (input, rng) => {
    if (input.length < 2) return input
    const i = rng.below(input.length)
    const n = 1 + rng.below(Math.min(16, input.length - i))
    return Buffer.concat([input.subarray(0, i), input.subarray(i + n)])
  },
  // Duplicate a range in place (repeated fields, repeated packets).
  (input, rng) => {
    if (input.length === 0) return input
    const i = rng.below(input.length)
    const n = 1 + rng.below(Math.min(64, input.length - i))
    return Buffer.concat([input.subarray(0, i + n), input.subarray(i, i + n), input.subarray(i + n)])
  },
  // Truncate.
  (input, rng) => input.subarray(0, rng.below(input.length + 1)),
  // Insert or overwrite a dictionary word.
  (input, rng, ctx) => {
    if (ctx.dictionary.length === 0) return input
    const word = rng.pick(ctx.dictionary)
    const i = at(input, rng)
    if (rng.chance(0.5)) return Buffer.concat([input.subarray(0, i), word, input.subarray(i)])
    return Buffer.concat([input.subarray(0, i), word, input.subarray(Math.min(input.length, i + word.length))])
  },
  // Crossover: the head of this input and the tail of another.
  (input, rng, ctx) => {
    if (ctx.corpus.length === 0) return input
    const other = rng.pick(ctx.corpus)
    return Buffer.concat([input.subarray(0, at(input, rng)), other.subarray(rng.below(other.length + 1))])
  },
]

/** One to a few stacked byte-level mutations, as libFuzzer stacks them. */
export function mutateBytes(input: Buffer, rng: Rng, ctx: MutationContext): Buffer {
  let out = input
  const rounds = 1 + rng.below(rng.chance(0.7) ? 2 : 6)
  for (let i = 0; i < rounds; i++) out = rng.pick(byteMutators)(out, rng, ctx)
  return out.length > ctx.maxLength ? out.subarray(0, ctx.maxLength) : out
}

/** Dictionary words from strings. */
export const words = (...items: string[]): Buffer[] => items.map((s) => Buffer.from(s, 'latin1'))
