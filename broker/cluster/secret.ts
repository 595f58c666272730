import { timingSafeEqual, createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { FleetmqError } from '../errors.js'

/*
 * The cluster secret: a file of at least 32 random bytes (`openssl rand -hex 32 > F`), never the
 * secret itself in the config. Nodes present it as `Authorization: Bearer <secret>`.
 */

export const MIN_SECRET_BYTES = 32

export function readClusterSecret(file: string): string {
  let text: string
  try {
    text = readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new FleetmqError('CLUSTER', `cannot read the cluster secret file ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); create it with: openssl rand -hex 32 > ${file}`)
  }
  if (Buffer.byteLength(text) < MIN_SECRET_BYTES) {
    throw new FleetmqError('CLUSTER', `the cluster secret in ${file} is ${Buffer.byteLength(text)} bytes; it must hold at least ${MIN_SECRET_BYTES} (openssl rand -hex 32 > ${file})`)
  }
  if (/\s/.test(text)) throw new FleetmqError('CLUSTER', `the cluster secret in ${file} contains whitespace; use one line, e.g. openssl rand -hex 32`)
  return text
}

/** Constant-time comparison (hashes first so lengths do not leak either). */
export function secretsEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return timingSafeEqual(ha, hb)
}

export function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null
  return match?.[1]
}
