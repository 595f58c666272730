import { availableParallelism } from 'node:os'
import { FleetmqError } from '../errors.js'
import { hashPassword, parseHash, SCRYPT_PARAMS } from './password.js'
import { usernameProblem, type Role, type StoredUser } from './users.js'

/*
 * Bulk loads of device users (`fleetmq user import FILE`), as pure functions: parse a CSV or JSON
 * file into checked records, then hash the plain passwords.
 *
 * CSV (RFC 4180: a header line, fields quoted with "…" when they hold a comma, a quote or a line
 * break, "" for a quote inside): columns `username` and one of `password` or `hash`, optionally
 * `admin` (true/false, yes/no, 1/0). JSON: an array of {"username", "password" | "hash",
 * "admin"?, "roles"?, "created"?}, or a users.json ({"version":1,"users":[…]}).
 *
 * Cost: the default hash (scrypt N = 2^15, 32 MiB) takes 50–250 ms of a core, so 100,000 plain
 * passwords would take hours on a small host. A fleet is best loaded with hashes made where the
 * credentials are generated (`hash` column), at any cost. Plain passwords may be hashed cheaper
 * with `--hash-cost`, for machine-generated device credentials only: the cost of a hash protects
 * guessable passwords against offline cracking, and a random credential of 20 characters or more
 * (≥ 119 bits from a 62-letter alphabet) cannot be guessed at any cost, so a cheaper hash gives
 * nothing away for them. A cost below the default is refused for shorter passwords.
 */

export interface ImportRecord {
  readonly username: string
  readonly password?: string
  readonly hash?: string
  readonly roles: Role[]
  readonly created?: string
}

/** Shortest password allowed with a cost below the default (see above). */
export const MIN_CHEAP_PASSWORD_LENGTH = 20
/** Lowest scrypt N accepted: 2^10 (1 MiB). */
export const MIN_HASH_COST = 1024
const MAX_PROBLEMS_SHOWN = 20

/** Splits RFC 4180 CSV text into rows of fields. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = []
  let row: string[] = []
  let field = ''
  let quoted = false
  let i = 0
  const body = text.replace(/^\uFEFF/, '')
  while (i < body.length) {
    const ch = body[i]
    if (quoted) {
      if (ch === '"' && body[i + 1] === '"') {
        field += '"'
        i += 2
        continue
      }
      if (ch === '"') quoted = false
      else field += ch
      i++
      continue
    }
    if (ch === '"' && field === '') quoted = true
    else if (ch === ',') {
      row.push(field)
      field = ''
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && body[i + 1] === '\n') i++
      row.push(field)
      rows.push(row)
      row = []
      field = ''
    } else field += ch
    i++
  }
  if (quoted) throw new FleetmqError('FLAG_INVALID', 'the CSV file ends inside a quoted field; close the quote ("…")')
  if (field !== '' || row.length) {
    row.push(field)
    rows.push(row)
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === ''))
}

const TRUE = new Set(['true', 'yes', '1'])
const FALSE = new Set(['false', 'no', '0', ''])

interface RawRecord {
  username?: unknown
  password?: unknown
  hash?: unknown
  admin?: unknown
  roles?: unknown
  created?: unknown
  /** CSV: the number of fields of a line whose count differs from the header's. */
  columns?: number
}

function csvRecords(text: string): { where: string; raw: RawRecord }[] {
  const [header, ...rows] = parseCsv(text)
  if (!header) return []
  const columns = header.map((h) => h.trim().toLowerCase())
  const unknown = columns.filter((c) => !['username', 'password', 'hash', 'admin'].includes(c))
  if (!columns.includes('username') || unknown.length || (!columns.includes('password') && !columns.includes('hash'))) {
    throw new FleetmqError('FLAG_INVALID', `the CSV header is "${header.join(',')}"; it must name the columns username, password or hash, and optionally admin (for example: username,password,admin)`)
  }
  return rows.map((cells, index) => {
    const raw: Record<string, string> = {}
    columns.forEach((c, j) => { if (cells[j] !== undefined && cells[j] !== '') raw[c] = cells[j] })
    const admin = raw.admin?.toLowerCase()
    return { where: `line ${index + 2}`, raw: { ...raw, admin: admin === undefined ? undefined : TRUE.has(admin) ? true : FALSE.has(admin) ? false : raw.admin, ...(cells.length !== columns.length ? { columns: cells.length } : {}) } }
  })
}

function jsonRecords(text: string): { where: string; raw: RawRecord }[] {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new FleetmqError('FLAG_INVALID', `the file is not valid JSON (${(err as Error).message}); give an array of {"username","password"|"hash","admin"} or a users.json`)
  }
  const list = Array.isArray(data) ? data : (data as { users?: unknown } | null)?.users
  if (!Array.isArray(list)) throw new FleetmqError('FLAG_INVALID', 'the JSON file must hold an array of users, or {"users": [...]} as users.json does')
  return list.map((raw, index) => ({ where: `user #${index + 1}`, raw: (typeof raw === 'object' && raw !== null ? raw : {}) as RawRecord }))
}

/** Why one record cannot be imported, or the record. */
function checkRecord(raw: RawRecord, hashCost: number): ImportRecord | string {
  if (raw.columns !== undefined) return `has ${raw.columns} fields; the header has a different number`
  if (typeof raw.username !== 'string') return 'has no username'
  const nameProblem = usernameProblem(raw.username)
  if (nameProblem) return nameProblem
  const hasPassword = raw.password !== undefined
  const hasHash = raw.hash !== undefined
  if (hasPassword === hasHash) return `"${raw.username}" needs a password or a hash (one of them)`
  if (hasHash) {
    if (typeof raw.hash !== 'string') return `"${raw.username}": the hash must be a string`
    const parsed = parseHash(raw.hash)
    if (typeof parsed === 'string') return `"${raw.username}": the hash is not a FleetMQ password hash (${parsed})`
  } else {
    if (typeof raw.password !== 'string' || raw.password.length === 0) return `"${raw.username}": the password must be a non-empty string`
    if (/[\r\n]/.test(raw.password) || Buffer.byteLength(raw.password) > 1024) return `"${raw.username}": the password holds a line break or is longer than 1024 bytes`
    if (hashCost < SCRYPT_PARAMS.N && [...raw.password].length < MIN_CHEAP_PASSWORD_LENGTH) {
      return `"${raw.username}": the password has fewer than ${MIN_CHEAP_PASSWORD_LENGTH} characters, too few for --hash-cost ${hashCost} (below ${SCRYPT_PARAMS.N} only random device credentials of ${MIN_CHEAP_PASSWORD_LENGTH}+ characters are safe); import it without --hash-cost`
    }
  }
  if (raw.admin !== undefined && typeof raw.admin !== 'boolean') return `"${raw.username}": admin must be true or false`
  const roles = raw.roles ?? (raw.admin ? ['admin'] : [])
  if (!Array.isArray(roles) || !roles.every((r) => r === 'admin')) return `"${raw.username}": roles may only hold "admin"`
  if (raw.created !== undefined && typeof raw.created !== 'string') return `"${raw.username}": created must be an ISO 8601 time`
  return {
    username: raw.username,
    ...(hasHash ? { hash: raw.hash as string } : { password: raw.password as string }),
    roles: roles as Role[],
    ...(raw.created ? { created: raw.created as string } : {}),
  }
}

/** Every record of an import file, checked; one error lists the problems (up to 20), and nothing is imported. */
export function parseImport(text: string, format: 'csv' | 'json', hashCost: number): ImportRecord[] {
  const entries = format === 'csv' ? csvRecords(text) : jsonRecords(text)
  const problems: string[] = []
  const records: ImportRecord[] = []
  const seen = new Set<string>()
  for (const { where, raw } of entries) {
    const record = checkRecord(raw, hashCost)
    if (typeof record === 'string') problems.push(`${where}: ${record}`)
    else if (seen.has(record.username)) problems.push(`${where}: "${record.username}" appears more than once`)
    else {
      seen.add(record.username)
      records.push(record)
    }
  }
  if (problems.length) {
    const shown = problems.slice(0, MAX_PROBLEMS_SHOWN)
    if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more`)
    throw new FleetmqError('FLAG_INVALID', `${problems.length} of ${entries.length} users cannot be imported; fix them and import again (nothing was imported)`, shown)
  }
  return records
}

/** `--hash-cost`: a power of two from 2^10 to the default. */
export function hashCostProblem(cost: number): string | undefined {
  if (!Number.isInteger(cost) || cost < MIN_HASH_COST || cost > SCRYPT_PARAMS.N || (cost & (cost - 1)) !== 0) {
    return `--hash-cost must be a power of two from ${MIN_HASH_COST} to ${SCRYPT_PARAMS.N} (scrypt N), got ${cost}`
  }
  return undefined
}

/** The records as stored: plain passwords hashed at `hashCost`, as many at once as the host has cores. */
export async function hashRecords(records: readonly ImportRecord[], hashCost: number, now = new Date().toISOString()): Promise<StoredUser[]> {
  const params = { ...SCRYPT_PARAMS, N: hashCost }
  const out: StoredUser[] = new Array(records.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < records.length) {
      const i = next++
      const record = records[i]
      const hash = record.hash ?? await hashPassword(record.password as string, params)
      out[i] = { username: record.username, hash, roles: record.roles, created: record.created ?? now }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, availableParallelism()) }, worker))
  return out
}
