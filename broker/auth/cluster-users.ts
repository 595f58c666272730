import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import { FleetmqError } from '../errors.js'
import { describeIssues } from '../config/load.js'
import { aclSettingsSchema, type AclSettings } from '../config/schema.js'
import type { ImportReport, UserAdmin, UserChange, UserDirectory } from './user-store.js'
import { parseUserRecord, type StoredUser } from './users.js'

/*
 * The user store of a cluster, in its Redis, so that every node admits the same devices:
 *
 *   fleetmq:<cluster>:users          HASH  username → the user record as users.json holds it
 *                                          ({"username","hash","roles","created"}: scrypt hashes, never a password)
 *   fleetmq:<cluster>:acl            STRING the ACL ({"default","rules"}, the config's `acl` section)
 *   fleetmq:<cluster>:auth:version   STRING a counter raised by every change
 *   fleetmq:<cluster>:auth:changed   pub/sub channel: {"version":N,"users":[names],"recheck":bool,"acl":bool}
 *
 * Every change runs as one Lua script (the write, the counter and the message are one atomic
 * step). A node caches the records it has used and drops them when the message names them; it
 * also reads the counter every POLL_MS, and a counter that stays ahead of the messages it saw
 * (a message lost while its subscriber reconnected) drops the whole cache and re-checks every
 * session: a change reaches every node within a second through pub/sub, within 2 s without it.
 */

export const usersKey = (cluster: string): string => `fleetmq:${cluster}:users`
export const aclKey = (cluster: string): string => `fleetmq:${cluster}:acl`
export const versionKey = (cluster: string): string => `fleetmq:${cluster}:auth:version`
export const changedChannel = (cluster: string): string => `fleetmq:${cluster}:auth:changed`

/** How often a node compares the change counter with the messages it received, ms. */
const POLL_MS = 500
/** Records a node keeps in memory (about 300 bytes each); the oldest go first. */
const CACHE_MAX = 200_000
/** Records written per round trip by an import. */
const IMPORT_CHUNK = 2_000

const NOTIFY = `
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], cjson.encode({version = v, users = USERS, recheck = RECHECK, acl = ACL}))
return v`

/** KEYS: users, version; ARGV: channel, username, record. -1: the user exists. */
const ADD_SCRIPT = `
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then return -1 end
local USERS = {ARGV[2]}
local RECHECK = false
local ACL = false` + NOTIFY

/** ARGV: channel, username, new record, the record it replaces. -1: no such user; -2: changed meanwhile. */
const UPDATE_SCRIPT = `
local current = redis.call('HGET', KEYS[1], ARGV[2])
if not current then return -1 end
if current ~= ARGV[4] then return -2 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
local USERS = {ARGV[2]}
local RECHECK = true
local ACL = false` + NOTIFY

/** ARGV: channel, username. -1: no such user. */
const REMOVE_SCRIPT = `
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
local USERS = {ARGV[2]}
local RECHECK = true
local ACL = false` + NOTIFY

/** ARGV: channel. After an import: new users only, nothing cached nor connected is affected. */
const BUMP_SCRIPT = `
local USERS = {}
local RECHECK = false
local ACL = false` + NOTIFY

/** KEYS: acl, version; ARGV: channel, ACL, "NX" to store it only when the cluster has none. 0: it had one. */
const ACL_SCRIPT = `
if ARGV[3] == 'NX' then
  if redis.call('SET', KEYS[1], ARGV[2], 'NX') == false then return 0 end
else
  redis.call('SET', KEYS[1], ARGV[2])
end
local USERS = {}
local RECHECK = false
local ACL = true` + NOTIFY

/** The cluster's ACL, or undefined when none is stored. */
export async function readClusterAcl(redis: Redis, cluster: string): Promise<AclSettings | undefined> {
  const text = await redis.get(aclKey(cluster))
  if (text === null) return undefined
  const parsed = aclSettingsSchema.safeParse(JSON.parse(text))
  if (!parsed.success) throw new FleetmqError('CONFIG_INVALID', `the cluster's ACL in Redis is invalid; store a valid one with fleetmq acl set FILE`, describeIssues(parsed.error.issues))
  return parsed.data
}

/** Stores the cluster's ACL (every node applies it); with `onlyIfNone`, only when it has none. Returns whether it was stored. */
export async function storeClusterAcl(redis: Redis, cluster: string, acl: AclSettings, onlyIfNone = false): Promise<boolean> {
  const result = await redis.eval(ACL_SCRIPT, 2, aclKey(cluster), versionKey(cluster), changedChannel(cluster), JSON.stringify(acl), onlyIfNone ? 'NX' : '')
  return Number(result) !== 0
}

interface ChangeMessage {
  readonly version: number
  /** Lua's cjson encodes an empty table as an object. */
  readonly users: readonly string[] | Record<string, never>
  readonly recheck: boolean
  readonly acl?: boolean
}

function parseRecord(name: string, text: string | null | undefined, log?: Logger): StoredUser | undefined {
  if (text === null || text === undefined) return undefined
  const user = parseUserRecord(text)
  if (typeof user === 'string') {
    log?.error({ username: name }, `the cluster's record of user "${name}" is invalid (${user}); set it again with fleetmq user passwd ${name}`)
    return undefined
  }
  return user
}

/** Write access to a cluster's store: `fleetmq user …`, imports and the join merge. */
export function clusterUserAdmin(redis: Redis, cluster: string, where: string): UserAdmin {
  const keys = [usersKey(cluster), versionKey(cluster)]
  const channel = changedChannel(cluster)
  const run = async (script: string, ...args: string[]): Promise<number> => Number(await redis.eval(script, 2, ...keys, channel, ...args))

  const get = async (name: string): Promise<StoredUser | undefined> => parseRecord(name, await redis.hget(usersKey(cluster), name))
  const unknown = (name: string): FleetmqError => new FleetmqError('USER_UNKNOWN', `no user "${name}" in ${where}; fleetmq user list shows the users`)

  return {
    where,
    get,
    async list() {
      const all = await redis.hgetall(usersKey(cluster))
      return Object.entries(all).flatMap(([name, text]) => parseRecord(name, text) ?? []).sort((a, b) => a.created.localeCompare(b.created) || a.username.localeCompare(b.username))
    },
    async add(user) {
      if (await run(ADD_SCRIPT, user.username, JSON.stringify(user)) === -1) {
        throw new FleetmqError('USER_EXISTS', `user "${user.username}" already exists in ${where}; change the password with fleetmq user passwd ${user.username}`)
      }
    },
    async update(name, change) {
      for (;;) {
        const text = await redis.hget(usersKey(cluster), name)
        const current = parseRecord(name, text)
        if (!current || text === null) throw unknown(name)
        const result = await run(UPDATE_SCRIPT, name, JSON.stringify({ ...current, ...change }), text)
        if (result === -1) throw unknown(name)
        if (result !== -2) return
      }
    },
    async remove(name) {
      if (await run(REMOVE_SCRIPT, name) === -1) throw unknown(name)
    },
    async import(users) {
      const report: ImportReport = { added: 0, unchanged: 0, conflicts: [] }
      for (let i = 0; i < users.length; i += IMPORT_CHUNK) {
        const chunk = users.slice(i, i + IMPORT_CHUNK)
        const set = redis.pipeline()
        for (const user of chunk) set.hsetnx(usersKey(cluster), user.username, JSON.stringify(user))
        const results = (await set.exec()) ?? []
        const existing = chunk.filter((_, j) => {
          const [err, added] = results[j] ?? [new Error('no reply')]
          if (err) throw new FleetmqError('USER_STORE', `Redis refused the import at user "${chunk[j].username}" (${err.message}); ${report.added} users were added before it`)
          return Number(added) === 0
        })
        report.added += chunk.length - existing.length
        if (existing.length === 0) continue
        const stored = await redis.hmget(usersKey(cluster), ...existing.map((u) => u.username))
        existing.forEach((user, j) => {
          const theirs = parseRecord(user.username, stored[j])
          if (theirs && theirs.hash === user.hash) report.unchanged++
          else report.conflicts.push(user.username)
        })
      }
      if (report.added > 0) await run(BUMP_SCRIPT)
      return report
    },
    async close() {
      await redis.quit().catch(() => redis.disconnect())
    },
  }
}

export interface ClusterDirectoryOptions {
  readonly redis: Redis
  /** A connection for SUBSCRIBE only (Redis allows no other command on it). */
  readonly subscriber: Redis
  readonly cluster: string
  readonly where: string
  readonly log: Logger
}

/**
 * What a clustered node reads: records on demand (HGET), cached until a change names them. While
 * Redis is unreachable the cached records still admit their devices (the node serves local
 * clients through an outage), and users never seen on this node are refused.
 */
export interface ClusterUserDirectory extends UserDirectory {
  /** The cluster's ACL, or undefined when it has none. */
  readAcl(): Promise<AclSettings | undefined>
  /** Stores `acl` as the cluster's when it has none; returns whether it did. */
  seedAcl(acl: AclSettings): Promise<boolean>
  /** Called when the cluster's ACL changed (or a change may have been missed). */
  onAclChange(listener: () => void): void
}

export function clusterUserDirectory(options: ClusterDirectoryOptions): ClusterUserDirectory {
  const { redis, subscriber, cluster, log } = options
  const cache = new Map<string, StoredUser>()
  const listeners: ((change: UserChange) => void)[] = []
  const aclListeners: (() => void)[] = []
  const channel = changedChannel(cluster)
  /** Raised by every invalidation: a lookup that started before one does not fill the cache. */
  let generation = 0
  /** The highest change counter this node has acted on. */
  let seen = -1
  /** A counter read ahead of `seen` once: acted on if it is still ahead at the next read. */
  let aheadSince: number | undefined
  let closed = false

  const emit = (change: UserChange): void => {
    for (const listener of listeners) listener(change)
  }
  const dropAll = (reason: string): void => {
    generation++
    cache.clear()
    log.info({ cluster }, `user store: ${reason}; cached users dropped, sessions and the ACL re-checked`)
    emit('all')
    for (const listener of aclListeners) listener()
  }

  subscriber.on('message', (from: string, text: string) => {
    if (from !== channel) return
    let message: ChangeMessage
    try {
      message = JSON.parse(text) as ChangeMessage
    } catch {
      return
    }
    const users = Array.isArray(message.users) ? message.users : []
    seen = Math.max(seen, message.version)
    if (message.acl) for (const listener of aclListeners) listener()
    if (users.length === 0) return
    generation++
    for (const name of users) cache.delete(name)
    log.debug({ users: users.length, version: message.version }, 'user store: change received')
    if (message.recheck) emit(users)
  })
  // Errors are the backend's to report (same Redis); without a listener ioredis would throw.
  subscriber.on('error', () => undefined)
  redis.on('error', () => undefined)
  const subscribed = subscriber.subscribe(channel).catch((err: Error) => log.warn({ err }, `user store: cannot subscribe to changes (${err.message}); polling only`))

  const poll = async (): Promise<void> => {
    if (redis.status !== 'ready') return
    const version = Number(await redis.get(versionKey(cluster)) ?? 0)
    if (seen < 0) {
      seen = version
      return
    }
    if (version <= seen) {
      aheadSince = undefined
      return
    }
    // The message of this change may still be on its way on the other connection.
    if (aheadSince === undefined) {
      aheadSince = version
      return
    }
    seen = version
    aheadSince = undefined
    dropAll(`the change counter moved to ${version} without a message (missed while reconnecting)`)
  }
  const timer = setInterval(() => {
    poll().catch((err: Error) => log.debug({ err }, 'user store: change counter read failed'))
  }, POLL_MS)
  timer.unref()

  return {
    where: options.where,
    async get(name) {
      const cached = cache.get(name)
      if (redis.status !== 'ready') return cached
      const started = generation
      const user = parseRecord(name, await redis.hget(usersKey(cluster), name), log)
      if (user && started === generation) {
        if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string)
        cache.delete(name)
        cache.set(name, user)
      }
      return user
    },
    async count() {
      await subscribed
      if (seen < 0) seen = Number(await redis.get(versionKey(cluster)) ?? 0)
      return redis.hlen(usersKey(cluster))
    },
    onChange(listener) {
      listeners.push(listener)
    },
    readAcl: () => readClusterAcl(redis, cluster),
    seedAcl: (acl) => storeClusterAcl(redis, cluster, acl, true),
    onAclChange(listener) {
      aclListeners.push(listener)
    },
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      await Promise.all([redis, subscriber].map((c) => c.quit().catch(() => c.disconnect())))
    },
  }
}
