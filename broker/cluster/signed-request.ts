import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

/*
 * Node-to-node requests signed with the cluster secret, instead of sending the secret itself:
 *
 *   Authorization: FleetMQ-HMAC-SHA256 ts=<epoch ms>,nonce=<32 hex>,sig=<64 hex>
 *   sig = HMAC-SHA256(secret, METHOD \n PATH \n ts \n nonce \n hex(SHA-256(body)))
 *
 * The secret never crosses the network, a captured request is good once (the nonce is remembered)
 * and only within SIGNATURE_WINDOW_MS of its timestamp, and a changed method, path or body breaks
 * the signature. The descriptor a seed answers with carries the Redis password: it is sealed
 * (AES-256-GCM) with a key derived from the secret and the request's nonce, so it is not readable
 * on the wire either (the management API speaks plain HTTP).
 */

export const SIGNATURE_SCHEME = 'FleetMQ-HMAC-SHA256'
/** How far a request's timestamp may be from this node's clock, either way: the nodes run NTP. */
export const SIGNATURE_WINDOW_MS = 60_000

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')

function signature(secret: string, method: string, path: string, ts: string, nonce: string, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${method.toUpperCase()}\n${path}\n${ts}\n${nonce}\n${sha256Hex(body)}`).digest('hex')
}

export interface SignedHeaders {
  readonly authorization: string
  readonly nonce: string
}

/** The Authorization header of a request signed with the cluster secret, and its nonce. */
export function signRequest(secret: string, method: string, path: string, body: string | Buffer = '', now: number = Date.now()): SignedHeaders {
  const ts = String(now)
  const nonce = randomBytes(16).toString('hex')
  return { authorization: `${SIGNATURE_SCHEME} ts=${ts},nonce=${nonce},sig=${signature(secret, method, path, ts, nonce, body)}`, nonce }
}

/** Nonces seen within the window; bounded, oldest first out. */
export class NonceCache {
  readonly #seen = new Map<string, number>()

  constructor(private readonly max = 100_000) {}

  /** False when `nonce` was already used. Records it until `expires`. */
  remember(nonce: string, expires: number, now: number = Date.now()): boolean {
    for (const [key, until] of this.#seen) {
      if (until > now && this.#seen.size < this.max) break
      this.#seen.delete(key)
    }
    if (this.#seen.has(nonce)) return false
    this.#seen.set(nonce, expires)
    return true
  }
}

export type Verdict = { readonly ok: true; readonly nonce: string } | { readonly ok: false; readonly reason: string }

const HEADER = /^FleetMQ-HMAC-SHA256\s+ts=(\d{1,16}),nonce=([0-9a-f]{32}),sig=([0-9a-f]{64})$/

/** Checks the request's signature, freshness and nonce; the reason says which failed. */
export function verifySignedRequest(req: IncomingMessage, body: Buffer, secret: string, nonces: NonceCache, now: number = Date.now()): Verdict {
  const match = HEADER.exec(req.headers.authorization ?? '')
  if (!match) return { ok: false, reason: 'not signed' }
  const [, ts, nonce, sig] = match
  if (Math.abs(now - Number(ts)) > SIGNATURE_WINDOW_MS) {
    return { ok: false, reason: `the request's time is ${Math.round((Number(ts) - now) / 1000)} s from this node's clock (at most ${SIGNATURE_WINDOW_MS / 1000} s): run NTP on both nodes` }
  }
  const path = (req.url ?? '/').split('?')[0]
  const expected = Buffer.from(signature(secret, req.method ?? 'GET', path, ts, nonce, body), 'hex')
  if (!timingSafeEqual(expected, Buffer.from(sig, 'hex'))) return { ok: false, reason: 'wrong signature (another cluster secret)' }
  if (!nonces.remember(nonce, Number(ts) + SIGNATURE_WINDOW_MS, now)) return { ok: false, reason: 'a replayed request (its nonce was used before)' }
  return { ok: true, nonce }
}

function sealKey(secret: string, nonce: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.from(nonce, 'hex'), 'fleetmq descriptor', 32))
}

/** `payload` encrypted for the node that signed the request with `nonce`. */
export function seal(secret: string, nonce: string, payload: unknown): { sealed: string } {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', sealKey(secret, nonce), iv)
  const data = Buffer.concat([cipher.update(JSON.stringify(payload), 'utf8'), cipher.final()])
  return { sealed: Buffer.concat([iv, data, cipher.getAuthTag()]).toString('base64') }
}

/** The payload of a sealed answer; throws when it was not sealed for this secret and nonce. */
export function unseal(secret: string, nonce: string, sealed: string): unknown {
  const bytes = Buffer.from(sealed, 'base64')
  if (bytes.length < 12 + 16) throw new Error('the sealed answer is too short')
  const decipher = createDecipheriv('aes-256-gcm', sealKey(secret, nonce), bytes.subarray(0, 12))
  decipher.setAuthTag(bytes.subarray(bytes.length - 16))
  const data = Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()])
  return JSON.parse(data.toString('utf8'))
}
