/*
 * Backoff after failed logins, per source address: after `threshold` failures in a row from one
 * address, CONNECTs from it are refused before any password is hashed, for 1 s, then 2, 4 … up to
 * `maxBackoffSeconds` while the failures go on. A success from the address clears its record.
 *
 * Each failed login costs a 32 MiB scrypt on libuv's small thread pool; without this, one source
 * guessing passwords at a few hundred CONNECTs a second starves the real devices' logins. Keyed by
 * address (the real client address through PROXY protocol), so devices elsewhere are not affected.
 * The record is this node's: behind a load balancer a guesser spread over the nodes meets the
 * backoff on each of them.
 */

interface Record {
  failures: number
  /** Epoch ms until which the address is refused. */
  until: number
  /** Epoch ms of the last failure: records idle past the longest backoff are forgotten. */
  last: number
}

/** Addresses tracked at most: beyond it the oldest records are dropped (a spoofing flood cannot grow memory). */
const MAX_ADDRESSES = 100_000

export class LoginGuard {
  readonly #records = new Map<string, Record>()

  constructor(private readonly threshold: number, private readonly maxBackoffSeconds: number) {}

  /** Milliseconds `address` must still wait, 0 when it may try. */
  waitFor(address: string | undefined, now: number = Date.now()): number {
    if (address === undefined || this.threshold === 0) return 0
    const record = this.#records.get(address)
    return record === undefined ? 0 : Math.max(0, record.until - now)
  }

  failed(address: string | undefined, now: number = Date.now()): void {
    if (address === undefined || this.threshold === 0) return
    let record = this.#records.get(address)
    if (record === undefined || now - record.last > this.maxBackoffSeconds * 2_000) {
      record = { failures: 0, until: 0, last: now }
    }
    this.#records.delete(address) // re-inserted last: the Map's order is the age order
    record.failures++
    record.last = now
    const over = record.failures - this.threshold
    if (over >= 0) record.until = now + Math.min(this.maxBackoffSeconds * 1000, 1000 * 2 ** Math.min(over, 20))
    this.#records.set(address, record)
    if (this.#records.size > MAX_ADDRESSES) this.#records.delete(this.#records.keys().next().value as string)
  }

  succeeded(address: string | undefined): void {
    if (address !== undefined) this.#records.delete(address)
  }

  get size(): number {
    return this.#records.size
  }
}
