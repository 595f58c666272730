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
