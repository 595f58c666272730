/*
 * A token bucket per remote address for the cluster management routes: `burst` requests at once,
 * refilled at `rate` per second. Buckets idle for a minute are forgotten so the map stays small.
 */

export interface RateLimiter {
  /** True when the request may proceed (and takes a token). */
  take(key: string, now?: number): boolean
}

export function createRateLimiter(rate: number, burst: number): RateLimiter {
  const buckets = new Map<string, { tokens: number; at: number }>()
  let lastSweep = Date.now()
  return {
    take(key, now = Date.now()) {
      if (now - lastSweep > 60_000) {
        for (const [k, b] of buckets) if (now - b.at > 60_000) buckets.delete(k)
        lastSweep = now
      }
      const bucket = buckets.get(key) ?? { tokens: burst, at: now }
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * rate)
      bucket.at = now
      buckets.set(key, bucket)
      if (bucket.tokens < 1) return false
      bucket.tokens -= 1
      return true
    },
  }
}
