import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/*
 * Password hashes: scrypt with a per-user random salt, parameters encoded in the string so they
 * can be raised later without invalidating stored hashes:
 *
 *   scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>
 *
 * N = 2^15, r = 8, p = 1 costs 32 MiB and roughly 50–150 ms of one libuv thread per hash. OWASP's
 * figure for scrypt is N = 2^17 (128 MiB), which would let a burst of reconnects on a broker
 * eat gigabytes; 2^15 is the RFC 7914 interactive-login setting and the verified-credentials cache
 * in `users.ts` keeps repeated connections from paying it again.
 */

export const SCRYPT_PARAMS = Object.freeze({ N: 32_768, r: 8, p: 1 })
const SALT_BYTES = 16
const KEY_BYTES = 32
/** Refuse parameters from a (possibly tampered) store that would cost more than this memory. */
const MAX_MEMORY_BYTES = 256 * 1024 * 1024

export interface ParsedHash {
  readonly N: number
  readonly r: number
  readonly p: number
  readonly salt: Buffer
  readonly key: Buffer
}

/**
 * Hashes running at once, at most: half of libuv's default pool of 4 threads, which file system
 * work, DNS lookups and TLS key generation share. A flood of logins then waits its turn instead of
 * holding every thread (and 32 MiB each) while the node's other work queues behind it.
 */
export const MAX_CONCURRENT_HASHES = 2
/** Hashes waiting for a slot, at most; beyond it a login is refused as "server busy" at once. */
export const MAX_WAITING_HASHES = 1_000

/** A hash refused because MAX_WAITING_HASHES are already waiting. */
export class HashQueueFull extends Error {
  /** What an HTTP caller answers: the node is busy, not the request wrong. */
  readonly statusCode = 503
  constructor() {
    super(`${MAX_WAITING_HASHES} password checks are already waiting; the node is refusing logins until they are done`)
    this.name = 'HashQueueFull'
  }
}

let running = 0
const waiting: Array<() => void> = []

async function inHashSlot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT_HASHES) {
    if (waiting.length >= MAX_WAITING_HASHES) throw new HashQueueFull()
    await new Promise<void>((resolve) => waiting.push(resolve))
  } else {
    running++
  }
  try {
    return await work()
  } finally {
    // The slot passes to the next waiter as is; only when none waits is it given back.
    const next = waiting.shift()
    if (next) next()
    else running--
  }
}

function derive(password: Buffer | string, salt: Buffer, params: { N: number; r: number; p: number }, length: number): Promise<Buffer> {
  // scrypt needs 128·N·r bytes; Node's default cap (32 MiB) is exactly that for our defaults.
  const options: ScryptOptions = { ...params, maxmem: 128 * params.N * params.r * params.p + 1024 * 1024 }
  return inHashSlot(() => new Promise((resolve, reject) => {
    scrypt(password, salt, length, options, (err, key) => (err ? reject(err) : resolve(key)))
  }))
}

export async function hashPassword(password: string, params: { N: number; r: number; p: number } = SCRYPT_PARAMS): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await derive(password, salt, params, KEY_BYTES)
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), key.toString('base64')].join('$')
}

/** The parts of a stored hash, or a sentence saying what is wrong with it. */
export function parseHash(encoded: string): ParsedHash | string {
  const parts = encoded.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return 'expected scrypt$N$r$p$salt$hash'
  const [N, r, p] = parts.slice(1, 4).map(Number)
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0)) return 'N, r and p must be positive integers'
  if ((N & (N - 1)) !== 0 || N < 2) return 'N must be a power of two'
  if (128 * N * r * p > MAX_MEMORY_BYTES) return `parameters need more than ${MAX_MEMORY_BYTES / 1024 / 1024} MiB`
  // Buffer.from skips characters that are not base64: check first, so a mangled copy is refused.
  if (!parts.slice(4).every((part) => /^[A-Za-z0-9+/]+={0,2}$/.test(part))) return 'salt and hash must be base64'
  const salt = Buffer.from(parts[4], 'base64')
  const key = Buffer.from(parts[5], 'base64')
  if (salt.length < 8 || key.length < 16) return 'salt or hash too short'
  return { N, r, p, salt, key }
}

/** Constant-time comparison of `password` against a stored hash. */
export async function verifyPassword(password: Buffer | string, encoded: string): Promise<boolean> {
  const parsed = parseHash(encoded)
  if (typeof parsed === 'string') return false
  const key = await derive(password, parsed.salt, parsed, parsed.key.length)
  return timingSafeEqual(key, parsed.key)
}

/**
 * A hash of a random password, verified against when the username is unknown so that a wrong
 * username costs the same time as a wrong password (no user enumeration by timing).
 */
let decoy: Promise<string> | undefined
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(randomBytes(16).toString('hex'))
  return decoy
}
