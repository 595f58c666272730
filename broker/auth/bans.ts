import type { BlockList } from 'node:net'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import type { RecordStore } from '../cluster/records.js'
import type { NodeView } from '../api/node-view.js'
import { ConnectRefusal, REASON, RETURN_CODE } from '../limits/refuse.js'
import { addressIn, addressList } from './acl-rules.js'
import { clientAddress } from './identity.js'

/*
 * Bans: a client id, a username or an address (IPv4/IPv6, or a CIDR block) refused at CONNECT on
 * every node, until an expiry or for good. Stored with the cluster's other records (Redis, or
 * `<dataDir>/banned.json` on a standalone node; cluster/records.ts).
 *
 * Each node keeps the bans in memory, so that a CONNECT costs no Redis round trip, and reads them
 * again every REFRESH_MS and whenever the management API changes them (it asks every node to, and
 * waits for their answers, so a ban is in force everywhere when the API answers). A refresh that
 * finds new bans disconnects the node's clients they match. A CONNECT refused by a ban gets
 * CONNACK 0x8A Banned (5.0) or 5 Not authorized (3.1.1, which has no such code), before any
 * password is hashed; a connected client is sent DISCONNECT 0x98 Administrative action.
 */

export const BAN_KINDS = ['clientid', 'username', 'address'] as const
export type BanKind = (typeof BAN_KINDS)[number]

export interface BanRecord {
  readonly kind: BanKind
  readonly value: string
  readonly reason: string | null
  /** ISO 8601 expiry, null for a ban without one. */
  readonly until: string | null
  readonly created: string
  /** Who made it (the API caller's name). */
  readonly by: string
}

/** How often each node reads the bans again, ms (the API also asks every node at once). */
const REFRESH_MS = 1_000

export const banId = (kind: BanKind, value: string): string => `${kind}:${value}`

/** Why `value` cannot be banned as `kind`, or undefined when it can. */
export function banValueProblem(kind: BanKind, value: string): string | undefined {
  if (kind !== 'address') return undefined
  try {
    addressList([value], 'value')
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

const expired = (ban: BanRecord, now: number): boolean => ban.until !== null && Date.parse(ban.until) <= now

interface Compiled {
  readonly clientIds: Map<string, BanRecord>
  readonly usernames: Map<string, BanRecord>
  readonly addresses: { list: BlockList; ban: BanRecord }[]
}

function compile(bans: readonly BanRecord[]): Compiled {
  const compiled: Compiled = { clientIds: new Map(), usernames: new Map(), addresses: [] }
  for (const ban of bans) {
    if (ban.kind === 'clientid') compiled.clientIds.set(ban.value, ban)
    else if (ban.kind === 'username') compiled.usernames.set(ban.value, ban)
    else if (banValueProblem('address', ban.value) === undefined) compiled.addresses.push({ list: addressList([ban.value], 'ban'), ban })
  }
  return compiled
}

export interface Subject {
  readonly clientid: string
  readonly username?: string | null
  readonly ip?: string | null
}

/** The ban in force for the subject, if any. */
function banOf(compiled: Compiled, subject: Subject, now: number): BanRecord | undefined {
  const candidates = [
    compiled.clientIds.get(subject.clientid),
    subject.username != null ? compiled.usernames.get(subject.username) : undefined,
    ...(subject.ip != null ? compiled.addresses.filter((a) => addressIn(a.list, subject.ip as string)).map((a) => a.ban) : []),
  ]
  return candidates.find((ban) => ban !== undefined && !expired(ban, now))
}

export interface Bans extends Feature {
  /** Bans in force (expired ones are removed from the store on the way). */
  list(): Promise<BanRecord[]>
  /** False when the same kind and value is banned already. */
  add(ban: BanRecord): Promise<boolean>
  remove(kind: BanKind, value: string): Promise<boolean>
  /** Reads the bans again and disconnects this node's clients they match; returns those client ids. */
  refresh(): Promise<string[]>
  /** Starts the periodic refresh; `view` finds the node's clients. */
  start(view: NodeView): Promise<void>
}

export function createBans(store: RecordStore<BanRecord>, log: Logger): Bans {
  let compiled = compile([])
  let known = new Set<string>()
  let view: NodeView | undefined
  let timer: NodeJS.Timeout | undefined
  let running: Promise<string[]> | undefined

  const read = async (): Promise<BanRecord[]> => {
    const now = Date.now()
    return [...(await store.list()).values()].filter((ban) => !expired(ban, now))
  }
  const reload = async (): Promise<string[]> => {
    const bans = await read()
    compiled = compile(bans)
    const ids = new Set(bans.map((b) => banId(b.kind, b.value)))
    const added = [...ids].some((id) => !known.has(id))
    known = ids
    if (!added || !view) return []
    const now = Date.now()
    const kicked = view.kickWhere((client) => banOf(compiled, client, now) !== undefined, 'banned by an operator')
    if (kicked.length > 0) log.info({ clients: kicked }, `disconnected ${kicked.length} banned client${kicked.length === 1 ? '' : 's'}: ${kicked.slice(0, 10).join(', ')}`)
    return kicked
  }
  /** One reload at a time; a call during one waits for it and runs another (the bans may have changed since it read). */
  const refresh = async (): Promise<string[]> => {
    while (running) await running.catch(() => undefined)
    running = reload()
    try {
      return await running
    } finally {
      running = undefined
    }
  }

  return {
    name: 'bans',
    preConnect(client, packet) {
      if (known.size === 0) return
      const ban = banOf(compiled, { clientid: packet.clientId, username: packet.username ?? null, ip: clientAddress(client) ?? null }, Date.now())
      if (!ban) return
      const message = `banned (${ban.kind} ${ban.value}${ban.until ? ` until ${ban.until}` : ''})`
      log.info({ clientId: packet.clientId, username: packet.username, remoteAddress: clientAddress(client), ban: banId(ban.kind, ban.value) }, `refused ${packet.clientId}: ${message}`)
      // [MQTT-3.2.2-6] 5.0 has 0x8A Banned; 3.1.1's closest return code is 5 Not authorized.
      throw new ConnectRefusal(REASON.BANNED, RETURN_CODE.NOT_AUTHORIZED, message)
    },
    async list() {
      const now = Date.now()
      const all = [...(await store.list()).values()]
      for (const ban of all.filter((b) => expired(b, now))) await store.remove(banId(ban.kind, ban.value))
      return all.filter((b) => !expired(b, now)).sort((a, b) => a.created.localeCompare(b.created) || banId(a.kind, a.value).localeCompare(banId(b.kind, b.value)))
    },
    async add(ban) {
      const id = banId(ban.kind, ban.value)
      const current = await store.get(id)
      // An expired ban of the same subject is replaced: it no longer exists for the operator.
      if (current && !expired(current, Date.now())) return false
      await store.put(id, ban)
      return true
    },
    remove: (kind, value) => store.remove(banId(kind, value)),
    refresh,
    async start(nodeView) {
      view = nodeView
      await refresh().catch((err: Error) => log.warn({ err }, `bans: cannot read them yet (${err.message}); retrying every second`))
      timer = setInterval(() => {
        refresh().catch((err: Error) => log.debug({ err }, 'bans: refresh failed'))
      }, REFRESH_MS)
      timer.unref()
    },
    async close() {
      clearInterval(timer)
      await store.close()
    },
  }
}
