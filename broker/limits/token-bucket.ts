/**
 * A token bucket for connect rates: `rate` tokens a second, bursts up to `rate` (one second's
 * worth). Time comes from the caller so tests need no clock.
 */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor(private readonly rate: number, now: number = Date.now()) {
    this.tokens = rate
    this.last = now
  }

  /** Takes a token; false when the bucket is empty. */
  take(now: number = Date.now()): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000
    this.last = now
    this.tokens = Math.min(this.rate, this.tokens + elapsed * this.rate)
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}

/**
 * One token bucket per key (a source address). A bucket untouched for a second is full again, the
 * same as no bucket: those are forgotten once more than `sweepAbove` keys are held, so a flood of
 * spoofed or many addresses cannot grow memory without bound.
 */
export class KeyedTokenBuckets {
  readonly #buckets = new Map<string, { bucket: TokenBucket; last: number }>()

  constructor(private readonly rate: number, private readonly sweepAbove = 10_000) {}

  take(key: string, now: number = Date.now()): boolean {
    let entry = this.#buckets.get(key)
    if (entry === undefined) {
      if (this.#buckets.size >= this.sweepAbove) this.#sweep(now)
      entry = { bucket: new TokenBucket(this.rate, now), last: now }
      this.#buckets.set(key, entry)
    }
    entry.last = now
    return entry.bucket.take(now)
  }

  get size(): number {
    return this.#buckets.size
  }

  #sweep(now: number): void {
    for (const [key, entry] of this.#buckets) if (now - entry.last >= 1_000) this.#buckets.delete(key)
  }
}
