import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { bearerToken } from '../cluster/secret.js'
import type { RecordStore } from '../cluster/records.js'
import type { ApiRole, Principal } from './http.js'

/*
 * API keys for the management API: `Authorization: Bearer fmq_<43 characters>`, each with a role
 * (viewer, operator, admin). A key is 32 random bytes, shown once when it is made; the store keeps
 * its SHA-256 only, keyed by the key's name.
 *
 * Why SHA-256 and not scrypt, as for passwords: a slow, salted hash protects secrets people choose,
 * which an attacker holding the hashes could guess. A key has 256 bits from the system's CSPRNG:
 * there is nothing to guess, and a preimage of SHA-256 is out of reach however fast each try is.
 * A fast hash also keeps every API request a microsecond of CPU, where scrypt would cost each one
 * 32 MiB and about 100 ms of a libuv thread (and would need a cache of verified keys to be usable).
 * The hash is compared by value, in a map lookup: it reveals nothing about the key.
 */

export const API_KEY_PREFIX = 'fmq_'
/** Names: what `fleetmq apikey add NAME` accepts. */
export const API_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
/** Keys listed from the store are reused this long before the next read, ms: a removed key stops working within it. */
const LIST_TTL_MS = 1_000

export interface ApiKeyRecord {
  readonly name: string
  readonly role: ApiRole
  /** hex SHA-256 of the whole key. */
  readonly hash: string
  /** The key's first characters, to recognise it in a list (`fmq_AbCd…`). */
  readonly prefix: string
  readonly created: string
}

/** What the API shows of a key: everything but the hash. */
export type ApiKeyInfo = Omit<ApiKeyRecord, 'hash'>

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')
export const infoOf = ({ hash: _hash, ...info }: ApiKeyRecord): ApiKeyInfo => info

export interface ApiKeys {
  readonly where: string
  /** A new key: the record and the key itself (shown once). Undefined when the name is taken. */
  add(name: string, role: ApiRole): Promise<{ key: string; info: ApiKeyInfo } | undefined>
  list(): Promise<ApiKeyInfo[]>
  remove(name: string): Promise<boolean>
  /** The principal of a request carrying a valid key as Bearer token. */
  authenticate(req: IncomingMessage): Promise<Principal | undefined>
  close(): Promise<void>
}

export function createApiKeys(store: RecordStore<ApiKeyRecord>): ApiKeys {
  let byHash: { at: number; map: Map<string, ApiKeyRecord> } | undefined
  const records = async (): Promise<Map<string, ApiKeyRecord>> => {
    const now = Date.now()
    if (byHash && now - byHash.at < LIST_TTL_MS) return byHash.map
    const map = new Map([...(await store.list()).values()].map((record) => [record.hash, record]))
    byHash = { at: now, map }
    return map
  }
  return {
    where: store.where,
    async add(name, role) {
      const key = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`
      const record: ApiKeyRecord = { name, role, hash: sha256(key), prefix: key.slice(0, API_KEY_PREFIX.length + 4), created: new Date().toISOString() }
      if (!(await store.add(name, record))) return undefined
      byHash = undefined
      return { key, info: infoOf(record) }
    },
    async list() {
      return [...(await store.list()).values()].map(infoOf).sort((a, b) => a.name.localeCompare(b.name))
    },
    async remove(name) {
      const removed = await store.remove(name)
      byHash = undefined
      return removed
    },
    async authenticate(req) {
      const token = bearerToken(req)
      if (token === undefined || !token.startsWith(API_KEY_PREFIX)) return undefined
      const record = (await records()).get(sha256(token))
      return record ? { kind: 'apikey', name: record.name, role: record.role } : undefined
    },
    close: () => store.close(),
  }
}
