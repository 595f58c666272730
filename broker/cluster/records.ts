import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Redis } from 'ioredis'
import { FleetmqError } from '../errors.js'

/*
 * Small cluster-wide record sets the management API edits (API keys, bans): one interface, two
 * places, as the user store has.
 *
 * - A clustered node keeps them in the cluster's Redis, one hash per kind
 *   (`fleetmq:<cluster>:<kind>`, field = record id, value = the record as JSON), so that every node
 *   answers the same at once.
 * - A standalone node keeps them in a JSON file of its data folder (`<dataDir>/<kind>.json`, mode
 *   0600), written to a temporary file and renamed into place. The running node is its only
 *   writer (the CLI goes through the management API), so writes are serialized in the process.
 *
 * The contract suite (test/broker/records.test.ts) runs against both.
 */

export interface RecordStore<T> {
  /** The file, or the cluster's hash, for messages. */
  readonly where: string
  list(): Promise<Map<string, T>>
  get(id: string): Promise<T | undefined>
  /** Stores `value` under `id` unless a record has that id; returns whether it stored it. */
  add(id: string, value: T): Promise<boolean>
  /** Stores `value` under `id`, replacing any record. */
  put(id: string, value: T): Promise<void>
  /** Returns whether there was a record to remove. */
  remove(id: string): Promise<boolean>
  close(): Promise<void>
}

export const recordsKey = (cluster: string, kind: string): string => `fleetmq:${cluster}:${kind}`

function parse<T>(text: string | null | undefined): T | undefined {
  if (text === null || text === undefined) return undefined
  try {
    return JSON.parse(text) as T
  } catch {
    return undefined
  }
}

/** Records in the cluster's Redis, on a connection the caller owns (and closes). */
export function redisRecords<T>(redis: Redis, cluster: string, kind: string): RecordStore<T> {
  const key = recordsKey(cluster, kind)
  return {
    where: `the cluster's Redis (${key})`,
    async list() {
      const all = await redis.hgetall(key)
      const out = new Map<string, T>()
      for (const [id, text] of Object.entries(all)) {
        const value = parse<T>(text)
        if (value !== undefined) out.set(id, value)
      }
      return out
    },
    get: async (id) => parse<T>(await redis.hget(key, id)),
    add: async (id, value) => Number(await redis.hsetnx(key, id, JSON.stringify(value))) === 1,
    async put(id, value) {
      await redis.hset(key, id, JSON.stringify(value))
    },
    remove: async (id) => Number(await redis.hdel(key, id)) === 1,
    close: async () => undefined,
  }
}

interface RecordsFile<T> {
  readonly version: 1
  readonly records: Record<string, T>
}

/** Records in a JSON file (a standalone node's data folder). */
export function fileRecords<T>(file: string): RecordStore<T> {
  let queue: Promise<unknown> = Promise.resolve()
  const read = (): Map<string, T> => {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map()
      throw new FleetmqError('USER_STORE', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); run the node as the user that owns its data folder`)
    }
    const data = parse<RecordsFile<T>>(text)
    if (data?.version !== 1 || typeof data.records !== 'object' || data.records === null) {
      throw new FleetmqError('USER_STORE', `${file} is not a FleetMQ record file ({"version":1,"records":{…}}); move it aside and add the records again`)
    }
    return new Map(Object.entries(data.records))
  }
  const write = (records: Map<string, T>): void => {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
    const temporary = `${file}.${process.pid}.tmp`
    writeFileSync(temporary, `${JSON.stringify({ version: 1, records: Object.fromEntries(records) } satisfies RecordsFile<T>, null, 2)}\n`, { mode: 0o600 })
    chmodSync(temporary, 0o600)
    renameSync(temporary, file)
  }
  /** Read-modify-write steps run one after the other. */
  const change = <R>(step: (records: Map<string, T>) => R): Promise<R> => {
    const next = queue.then(() => step(read()))
    queue = next.catch(() => undefined)
    return next
  }
  return {
    where: file,
    list: async () => read(),
    get: async (id) => read().get(id),
    add: (id, value) => change((records) => {
      if (records.has(id)) return false
      records.set(id, value)
      write(records)
      return true
    }),
    put: (id, value) => change((records) => {
      records.set(id, value)
      write(records)
    }),
    remove: (id) => change((records) => {
      if (!records.delete(id)) return false
      write(records)
      return true
    }),
    close: async () => {
      await queue
    },
  }
}
