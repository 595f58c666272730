import { existsSync, renameSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'
import type { Logger } from '../log.js'
import { changedUsernames, readUsersFile, updateUsersFile, usersFilePath, type StoredUser, type UserSource } from './users.js'

/*
 * Where the users live, chosen once per process from the config: a clustered node (cluster.redis)
 * keeps them in the cluster's Redis (cluster-users.ts) so that every node admits the same devices;
 * a standalone node keeps them in its users.json. Both sides have one interface for the node
 * (UserDirectory: read and watch) and one for operators (UserAdmin: the core calls behind
 * `fleetmq user …`).
 */

/** The usernames whose record changed, or 'all' when which is not known. */
export type UserChange = readonly string[] | 'all'

export interface UserDirectory extends UserSource {
  /** The file, or the cluster and its Redis, for logs and messages. */
  readonly where: string
  count(): Promise<number>
  /** Called after every change that may concern connected clients. */
  onChange(listener: (change: UserChange) => void): void
  /** SIGHUP: re-read (the file; the cluster store needs none). */
  reload?(): { count: number; warnings: string[] }
  close(): Promise<void>
}

export interface ImportReport {
  added: number
  /** Already there with the same hash. */
  unchanged: number
  /** Already there with another hash: kept as it was, never overwritten. */
  conflicts: string[]
}

export interface UserAdmin {
  readonly where: string
  list(): Promise<StoredUser[]>
  get(username: string): Promise<StoredUser | undefined>
  /** Throws USER_EXISTS. */
  add(user: StoredUser): Promise<void>
  /** Throws USER_UNKNOWN. */
  update(username: string, change: Partial<Pick<StoredUser, 'hash' | 'roles'>>): Promise<void>
  /** Throws USER_UNKNOWN. */
  remove(username: string): Promise<void>
  /** Adds the users that are not there; an existing user is never overwritten (see ImportReport). */
  import(users: readonly StoredUser[]): Promise<ImportReport>
  close(): Promise<void>
}

/** After this quiet time a burst of file events (write, rename) is read once, ms. */
const WATCH_SETTLE_MS = 50

export interface FileDirectoryOptions {
  readonly file: string
  readonly log: Logger
  /** Re-read the file when it changes (the node; not the tests of the class). */
  readonly watch: boolean
}

/**
 * The standalone node's users: the file in memory, read again on SIGHUP and whenever it changes
 * (a watch on its folder: `fleetmq user` replaces the file by a rename, which a watch on the file
 * itself would lose). A file that cannot be read keeps the users read before.
 */
export function fileUserDirectory(options: FileDirectoryOptions): UserDirectory & { readonly warnings: readonly string[] } {
  const { file, log } = options
  const loaded = readUsersFile(file)
  let users = new Map(loaded.users.map((u) => [u.username, u]))
  const listeners: ((change: UserChange) => void)[] = []
  let watcher: FSWatcher | undefined
  let settle: NodeJS.Timeout | undefined

  const reload = (): { count: number; warnings: string[] } => {
    const next = readUsersFile(file)
    const replaced = new Map(next.users.map((u) => [u.username, u]))
    const changed = changedUsernames(users, replaced)
    users = replaced
    if (changed.length) for (const listener of listeners) listener(changed)
    return { count: users.size, warnings: next.warnings }
  }

  if (options.watch) {
    try {
      watcher = watch(dirname(file), (_event, name) => {
        if (name !== basename(file)) return
        clearTimeout(settle)
        settle = setTimeout(() => {
          try {
            const before = users
            const { count, warnings } = reload()
            for (const warning of warnings) log.warn(warning)
            if (changedUsernames(before, users).length) log.info({ usersFile: file, users: count }, `the user store changed: ${count} user${count === 1 ? '' : 's'}`)
          } catch (err) {
            log.error({ err, usersFile: file }, `the user store changed but cannot be read, keeping the ${users.size} users read before: ${(err as Error).message}`)
          }
        }, WATCH_SETTLE_MS)
      })
      watcher.on('error', (err) => log.warn({ err, usersFile: file }, `stopped watching the user store (${err.message}); changes apply on SIGHUP`))
    } catch (err) {
      log.warn({ err, usersFile: file }, `cannot watch ${dirname(file)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); changes to the user store apply on SIGHUP`)
    }
  }

  return {
    where: file,
    warnings: loaded.warnings,
    get: (name) => users.get(name),
    count: async () => users.size,
    onChange(listener) {
      listeners.push(listener)
    },
    reload,
    async close() {
      clearTimeout(settle)
      watcher?.close()
    },
  }
}

/** `fleetmq user …` on a users.json, under its lock file. */
export function fileUserAdmin(file: string): UserAdmin {
  const unknown = (name: string): FleetmqError => new FleetmqError('USER_UNKNOWN', `no user "${name}" in ${file}; fleetmq user list shows the users`)
  return {
    where: file,
    list: async () => readUsersFile(file).users,
    get: async (name) => readUsersFile(file).users.find((u) => u.username === name),
    add: (user) => updateUsersFile(file, (users) => {
      if (users.some((u) => u.username === user.username)) {
        throw new FleetmqError('USER_EXISTS', `user "${user.username}" already exists in ${file}; change the password with fleetmq user passwd ${user.username}`)
      }
      return [...users, user]
    }),
    update: (name, change) => updateUsersFile(file, (users) => {
      if (!users.some((u) => u.username === name)) throw unknown(name)
      return users.map((u) => (u.username === name ? { ...u, ...change } : u))
    }),
    remove: (name) => updateUsersFile(file, (users) => {
      if (!users.some((u) => u.username === name)) throw unknown(name)
      return users.filter((u) => u.username !== name)
    }),
    async import(incoming) {
      const report: ImportReport = { added: 0, unchanged: 0, conflicts: [] }
      await updateUsersFile(file, (users) => {
        const known = new Map(users.map((u) => [u.username, u]))
        const added: StoredUser[] = []
        for (const user of incoming) {
          const existing = known.get(user.username)
          if (!existing) {
            known.set(user.username, user)
            added.push(user)
          } else if (existing.hash === user.hash) report.unchanged++
          else report.conflicts.push(user.username)
        }
        report.added = added.length
        return [...users, ...added]
      })
      return report
    },
    close: async () => undefined,
  }
}

/**
 * The store of the node `config` describes: a clustered node's is the cluster's, else the node's
 * users.json.
 */
export async function openUserAdmin(config: Config): Promise<UserAdmin> {
  if (!config.cluster.redis) return fileUserAdmin(usersFilePath(config))
  const { connectForCommand, describeRedis } = await import('../cluster/redis.js')
  const settings = config.cluster.redis
  const redis = await connectForCommand(settings, 'fleetmq-user-cli', config.cluster.name)
  const where = describeRedis(settings)
  const { clusterUserAdmin } = await import('./cluster-users.js')
  return clusterUserAdmin(redis, config.cluster.name, `cluster "${config.cluster.name}" (Redis at ${where})`)
}

export interface MergeReport extends ImportReport {
  readonly file: string
  /** Where the file was moved once merged. */
  readonly movedTo: string
}

/**
 * A node that becomes a member of a cluster brings its users: every user of its users.json the
 * cluster does not have is added; a user the cluster has with another hash is a conflict, reported
 * and left as the cluster has it (never overwritten). The file is then moved aside
 * (`users.json.merged`), so that a user removed from the cluster later does not come back at the
 * node's next start.
 */
export async function mergeUsersFile(admin: UserAdmin, file: string): Promise<MergeReport | undefined> {
  if (!existsSync(file)) return undefined
  const { users } = readUsersFile(file)
  const report = await admin.import(users)
  const movedTo = `${file}.merged`
  renameSync(file, movedTo)
  return { ...report, file, movedTo }
}
