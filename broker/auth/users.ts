import { createHmac, randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import type { Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'
import { decoyHash, parseHash, verifyPassword } from './password.js'

/*
 * The built-in user store: one JSON file (`<dataDir>/users.json` unless `usersFile` says
 * otherwise), written atomically with mode 0600, holding scrypt hashes and never a password.
 * The broker reads it at start and on SIGHUP; `fleetmq user …` edits it under a lock file.
 */

export const ROLES = ['admin'] as const
export type Role = (typeof ROLES)[number]

const userSchema = z.strictObject({
  username: z.string().min(1),
  hash: z.string().min(1),
  roles: z.array(z.enum(ROLES)).default([]),
  /** ISO 8601 time the user was added. */
  created: z.string().min(1),
})
const fileSchema = z.strictObject({
  version: z.literal(1),
  users: z.array(userSchema),
})

export type StoredUser = z.output<typeof userSchema>

/** One record as a users.json entry or a value of the cluster's users hash, or what is wrong with it. */
export function parseUserRecord(value: unknown): StoredUser | string {
  let data = value
  if (typeof value === 'string') {
    try {
      data = JSON.parse(value)
    } catch {
      return 'not JSON'
    }
  }
  const result = userSchema.safeParse(data)
  if (!result.success) return result.error.issues.map((i) => `${i.path.join('.') || 'record'}: ${i.message}`).join('; ')
  const hash = parseHash(result.data.hash)
  if (typeof hash === 'string') return `the password hash is invalid (${hash})`
  return result.data
}

export function usersFilePath(config: Pick<Config, 'dataDir' | 'usersFile'>): string {
  return config.usersFile ?? join(config.dataDir, 'users.json')
}

/** Why `name` cannot be a username, or undefined when it can. */
export function usernameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 128) return 'a username has 1 to 128 characters'
  // ':' separates user and password in HTTP Basic auth; '+', '#' and '/' would turn a `%u` in an
  // ACL topic into wildcards or extra levels; control characters and spaces hide in logs.
  if (/[:+#/\s\p{Cc}]/u.test(name)) return `"${name}" holds a character that usernames cannot have (space, control, ':', '+', '#' or '/')`
  return undefined
}

export interface LoadedUsers {
  readonly users: StoredUser[]
  /** Problems worth a warning that do not stop the broker (loose file permissions). */
  readonly warnings: string[]
}

/**
 * Reads and validates the store. A missing file is an empty store; anything else that prevents
 * reading it fails with an error naming the file and the fix.
 */
export function readUsersFile(file: string): LoadedUsers {
  let text: string
  const warnings: string[] = []
  try {
    text = readFileSync(file, 'utf8')
    const mode = statSync(file).mode & 0o777
    if ((mode & 0o077) !== 0) {
      warnings.push(`${file} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}); run chmod 600 ${file}`)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { users: [], warnings }
    const fix = code === 'EACCES' ? 'run as the user that owns it (root or fleetmq) or fix its permissions' : 'check the path (usersFile / --users-file / --data-dir)'
    throw new FleetmqError('USER_STORE', `cannot read the user store ${file} (${code ?? (err as Error).message}); ${fix}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new FleetmqError('USER_STORE', `the user store ${file} is not valid JSON (${(err as Error).message}); restore it from a backup, or move it away and add the users again with fleetmq user add`)
  }
  const result = fileSchema.safeParse(data)
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`)
    throw new FleetmqError('USER_STORE', `the user store ${file} does not have the expected form {"version":1,"users":[…]}; restore it from a backup`, problems)
  }
  const seen = new Set<string>()
  const problems: string[] = []
  for (const user of result.data.users) {
    if (seen.has(user.username)) problems.push(`user "${user.username}" appears twice`)
    seen.add(user.username)
    const parsed = parseHash(user.hash)
    if (typeof parsed === 'string') problems.push(`user "${user.username}": the password hash is invalid (${parsed}); set a new one with fleetmq user passwd ${user.username}`)
  }
  if (problems.length) throw new FleetmqError('USER_STORE', `the user store ${file} has invalid entries`, problems)
  return { users: result.data.users, warnings }
}

/** Replaces `file` atomically: a 0600 temp file in the same folder, fsync, rename, fsync the folder. */
export function writeUsersFile(file: string, users: readonly StoredUser[]): void {
  const dir = dirname(file)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const temp = join(dir, `.users.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const body = `${JSON.stringify({ version: 1, users }, null, 2)}\n`
  try {
    const fd = openSync(temp, 'wx', 0o600)
    try {
      writeSync(fd, body)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(temp, file)
  } catch (err) {
    try { unlinkSync(temp) } catch { /* never created */ }
    const code = (err as NodeJS.ErrnoException).code
    throw new FleetmqError('USER_STORE', `cannot write the user store ${file} (${code ?? (err as Error).message}); run as the user that owns ${dir} or choose another --users-file`)
  }
  const dirFd = openSync(dir, 'r')
  try { fsyncSync(dirFd) } finally { closeSync(dirFd) }
}

const LOCK_WAIT_MS = 10_000

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Read-modify-write under `<file>.lock`, so that two `fleetmq user` commands run at once cannot
 * lose each other's change. A lock left by a process that no longer runs is taken over.
 */
export async function updateUsersFile(file: string, change: (users: StoredUser[]) => Promise<StoredUser[]> | StoredUser[]): Promise<void> {
  const lock = `${file}.lock`
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    try {
      const fd = openSync(lock, 'wx', 0o600)
      writeSync(fd, String(process.pid))
      closeSync(fd)
      break
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EEXIST') throw new FleetmqError('USER_STORE', `cannot create the lock file ${lock} (${code}); run as the user that owns ${dirname(file)}`)
      let holder = NaN
      try { holder = Number(readFileSync(lock, 'utf8')) } catch { /* removed meanwhile */ }
      if (Number.isInteger(holder) && holder > 0 && !processAlive(holder)) {
        try { unlinkSync(lock) } catch { /* another command took it over first */ }
        continue
      }
      if (Date.now() > deadline) {
        throw new FleetmqError('USER_STORE', `the user store is locked by process ${holder} (${lock}); wait for it to finish, or remove the lock file if no fleetmq user command runs`)
      }
      await sleep(50)
    }
  }
  try {
    const { users } = readUsersFile(file)
    writeUsersFile(file, await change(users))
  } finally {
    unlinkSync(lock)
  }
}

/** How long a verified (username, password) pair is trusted without another scrypt, ms. */
const VERIFIED_TTL_MS = 10 * 60_000
/** Upper bound of remembered pairs (about 150 bytes each). */
const VERIFIED_MAX = 100_000

/** Where the users come from: the file in memory (standalone) or the cluster's Redis. */
export interface UserSource {
  get(username: string): Promise<StoredUser | undefined> | StoredUser | undefined
}

export interface VerifyResult {
  readonly user?: StoredUser
  /** True when the answer came from the verified-credentials cache. */
  readonly cached: boolean
  /** True when the user exists (the password may be wrong), for logs. */
  readonly known: boolean
}

/**
 * Password verification against a user source.
 *
 * Verification cache: a device fleet reconnecting after a network blip would otherwise cost one
 * scrypt (tens of milliseconds, 32 MiB) per connection. Only successes are remembered, for
 * VERIFIED_TTL_MS, keyed by HMAC-SHA256(per-process random key, username ‖ stored hash ‖ password):
 * the key never leaves memory, a changed password (new hash) or a removed user misses the cache,
 * and the map holds no password nor anything that can be brute-forced offline without the key.
 * Concurrent checks of the same pair share one scrypt.
 */
export class PasswordVerifier {
  readonly #source: UserSource
  readonly #cacheKey = randomBytes(32)
  readonly #verified = new Map<string, number>()
  readonly #pending = new Map<string, Promise<boolean>>()

  constructor(source: UserSource) {
    this.#source = source
  }

  /** The user when `password` is theirs. */
  async verify(username: string, password: Buffer | string): Promise<VerifyResult> {
    const user = await this.#source.get(username)
    if (!user) {
      await verifyPassword(password, await decoyHash())
      return { cached: false, known: false }
    }
    const key = createHmac('sha256', this.#cacheKey).update(username).update('\0').update(user.hash).update('\0').update(password).digest('base64')
    const expires = this.#verified.get(key)
    if (expires !== undefined && expires > Date.now()) return { user, cached: true, known: true }
    let pending = this.#pending.get(key)
    if (!pending) {
      pending = verifyPassword(password, user.hash).finally(() => this.#pending.delete(key))
      this.#pending.set(key, pending)
    }
    const ok = await pending
    if (!ok) return { cached: false, known: true }
    this.#verified.delete(key)
    if (this.#verified.size >= VERIFIED_MAX) this.#verified.delete(this.#verified.keys().next().value as string)
    this.#verified.set(key, Date.now() + VERIFIED_TTL_MS)
    // A change during the scrypt may have removed the user or changed the password.
    const current = await this.#source.get(username)
    return current?.hash === user.hash ? { user: current, cached: false, known: true } : { cached: false, known: current !== undefined }
  }
}

/** Usernames whose record differs between `before` and `after` (added, removed or changed). */
export function changedUsernames(before: ReadonlyMap<string, StoredUser>, after: ReadonlyMap<string, StoredUser>): string[] {
  const changed: string[] = []
  for (const [name, user] of before) {
    const next = after.get(name)
    if (!next || !sameRecord(user, next)) changed.push(name)
  }
  for (const name of after.keys()) if (!before.has(name)) changed.push(name)
  return changed
}

/** Same password hash and roles: what a connected client's admission depends on. */
export function sameRecord(a: StoredUser, b: StoredUser): boolean {
  return a.hash === b.hash && a.roles.length === b.roles.length && a.roles.every((r) => b.roles.includes(r))
}
