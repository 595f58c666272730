import type { Aedes, Client } from 'aedes'
import type { IncomingMessage } from 'node:http'
import type { Config, ListenerConfig } from '../config/schema.js'
import { connectionInfo } from '../connection-info.js'
import type { Feature } from '../hooks.js'
import { listenerName } from '../listeners/index.js'
import type { Logger } from '../log.js'
import { localClients } from '../cluster/drain.js'
import type { AclSource } from './acl.js'
import { createRedis, describeRedis, redisOptions } from '../cluster/redis.js'
import { clientAddress, clientIdentity, setClientIdentity } from './identity.js'
import { decoyHash, HashQueueFull } from './password.js'
import { LoginGuard } from './login-guard.js'
import { addressIn, rateExemptList } from './acl-rules.js'
import { ConnectRefusal, REASON, RETURN_CODE } from '../limits/refuse.js'
import { clusterUserAdmin, clusterUserDirectory } from './cluster-users.js'
import { fileUserDirectory, mergeUsersFile, type MergeReport, type UserChange, type UserDirectory } from './user-store.js'
import { PasswordVerifier, sameRecord, usersFilePath, type StoredUser } from './users.js'

export { clientIdentity, type ClientIdentity } from './identity.js'

/*
 * Who may connect, in this order:
 * 1. a verified TLS client certificate on a listener with `tls.useCnAsUsername`: its CN is the
 *    username, the certificate is the proof, any CONNECT username and password are ignored;
 * 2. no username: accepted only with `allowAnonymous: true` (announced with a warning at every
 *    start), refused otherwise with Not authorized (3.1.1 return code 5, 5.0 reason 0x87);
 * 3. username and password checked against the user store; a wrong password, an unknown user or a
 *    missing password are all "Bad User Name or Password" (3.1.1 return code 4, 5.0 reason 0x86),
 *    so the answer does not tell which users exist.
 */

/** Counters since start, for metrics. */
export const authStats = {
  /** MQTT connections accepted by authentication. */
  successes: 0,
  /** MQTT connections refused by authentication. */
  failures: 0,
  /** Successes answered from the verified-credentials cache (no scrypt). */
  cacheHits: 0,
  /** Management API requests refused for missing or wrong credentials. */
  mgmtFailures: 0,
  /** CONNECTs refused because their address was in its login backoff (no password checked). */
  backoffRefusals: 0,
}

/** aedes maps `returnCode` 4 to CONNACK 0x86 and 5 to 0x87 for 5.0 clients. */
/** MQTT 5.0 DISCONNECT reason 0x98 Administrative action (§3.14.2.1): the user was removed or changed. */
const ADMINISTRATIVE_ACTION = 0x98

const BAD_CREDENTIALS = 4
const NOT_AUTHORIZED = 5
/** 3.1.1 return code 3, which aedes sends to 5.0 clients as 0x88 Server unavailable. */
const SERVER_UNAVAILABLE = 3

function refusal(message: string, returnCode: number): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode })
}

export interface AuthFeature extends Feature {
  readonly users: UserDirectory
  /** Reads the store (and, on a clustered node, merges this node's users.json into the cluster's) before the node admits anyone. */
  start(): Promise<void>
  /** Watches the broker's clients: a removed user's sessions (or one whose password or roles changed) are closed. */
  attach(aedes: Aedes): void
  /** A clustered node's ACL: the cluster's, in the same Redis. */
  readonly aclSource: AclSource | undefined
  /** What the merge of this node's users.json into the cluster's store found, when there was one. */
  mergeReport(): MergeReport | undefined
  /** The admin user whose HTTP Basic credentials `req` carries, if any. Chain other checks in main.ts. */
  authorizeMgmt(req: IncomingMessage): Promise<StoredUser | undefined>
}

/** The `user:password` of an `Authorization: Basic …` header (RFC 7617), if it has one. */
export function basicCredentials(req: IncomingMessage): { username: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.headers.authorization ?? '')
  if (!match) return undefined
  const decoded = Buffer.from(match[1], 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 1) return undefined
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

/** The node's user directory: the cluster's Redis on a clustered node, else its users.json. */
function openDirectory(config: Config, log: Logger): { users: UserDirectory; warnings: readonly string[]; merge?: () => Promise<MergeReport | undefined>; acl?: AclSource } {
  const file = usersFilePath(config)
  const settings = config.cluster.redis
  if (!settings) {
    const users = fileUserDirectory({ file, log, watch: true })
    return { users, warnings: users.warnings }
  }
  const options = redisOptions(settings)
  const redis = createRedis(options, 'fleetmq-users')
  const subscriber = createRedis(options, 'fleetmq-users-sub')
  const where = `cluster "${config.cluster.name}" (Redis at ${describeRedis(settings)})`
  const users = clusterUserDirectory({ redis, subscriber, cluster: config.cluster.name, where, log })
  return { users, warnings: [], merge: () => mergeUsersFile(clusterUserAdmin(redis, config.cluster.name, where), file), acl: users }
}

export function authFeature(config: Config, log: Logger): AuthFeature {
  const { users, warnings, merge, acl } = openDirectory(config, log)
  const verifier = new PasswordVerifier(users)
  let merged: MergeReport | undefined
  // Made now so that the first unknown username is not slower than the next ones.
  void decoyHash()
  for (const warning of warnings) log.warn(warning)
  const cnListeners = new Map<string, ListenerConfig>(
    config.listeners.filter((l) => l.tls?.useCnAsUsername).map((l) => [listenerName(l), l]),
  )
  if (config.allowAnonymous) {
    log.warn('allowAnonymous is on: clients without credentials can connect and publish and subscribe to every topic (all but $SYS) unless a configured acl rule says otherwise. Use this for development only.')
  }
  /** The record each password-authenticated client was admitted with. */
  const admittedAs = new WeakMap<Client, StoredUser>()

  const guard = new LoginGuard(config.limits.loginFailuresBeforeBackoff, config.limits.maxLoginBackoff)
  const exempt = rateExemptList(config.limits)
  /** The source address the login backoff counts, undefined for exempt (local) sources. */
  const guardedAddress = (client: Client): string | undefined => {
    const address = clientAddress(client)
    return address === undefined || addressIn(exempt, address) ? undefined : address
  }

  const refuse = (client: Client, username: string | undefined, reason: string, returnCode: number): never => {
    authStats.failures++
    if (returnCode === BAD_CREDENTIALS) guard.failed(guardedAddress(client))
    log.info({ clientId: client.id, username, remoteAddress: clientAddress(client), listener: connectionInfo(client)?.listener, reason },
      `authentication failed for client ${client.id}: ${reason}`)
    throw refusal(returnCode === BAD_CREDENTIALS ? 'Bad User Name or Password' : 'Not authorized', returnCode)
  }
  const accept = (client: Client, user: StoredUser | undefined, username: string | undefined, method: 'password' | 'certificate' | 'anonymous'): true => {
    authStats.successes++
    if (method === 'password') guard.succeeded(guardedAddress(client))
    setClientIdentity(client, { username, roles: user?.roles ?? [], method })
    if (user && method === 'password') admittedAs.set(client, user)
    log.debug({ clientId: client.id, username, method }, 'authenticated')
    return true
  }

  const adminFromRequest = async (req: IncomingMessage): Promise<StoredUser | undefined> => {
    const credentials = basicCredentials(req)
    if (!credentials) return undefined
    const { user } = await verifier.verify(credentials.username, credentials.password)
    return user?.roles.includes('admin') ? user : undefined
  }

  /** Closes the sessions whose user is gone or no longer the record they were admitted with. */
  const recheck = async (aedes: Aedes, change: UserChange): Promise<void> => {
    const names = change === 'all' ? undefined : new Set(change)
    const affected = localClients(aedes).filter((client) => {
      const username = clientIdentity(client)?.username
      return admittedAs.has(client) && username !== undefined && (names === undefined || names.has(username))
    })
    for (const client of affected) {
      const admitted = admittedAs.get(client) as StoredUser
      const current = await users.get(admitted.username)
      if (client.closed || (current && sameRecord(admitted, current))) continue
      const reason = current ? 'its password or roles changed' : 'it was removed'
      log.info({ clientId: client.id, username: admitted.username, reason }, `closing client ${client.id}: user ${admitted.username} ${reason === 'it was removed' ? 'was removed' : 'changed (password or roles)'}`)
      // [MQTT-3.14.2-1] a 5.0 client is told why before the connection closes; 3.1.1 has no server DISCONNECT.
      if (client.version === 5) client.disconnect({ reasonCode: ADMINISTRATIVE_ACTION }, () => undefined)
      else client.close()
    }
  }

  return {
    name: 'auth',
    users,
    async start() {
      // A clustered store waits for Redis: say where before waiting, so a node stuck at start says why.
      if (acl) log.info({ where: users.where }, `reading the user store ${users.where}`)
      if (merge) {
        merged = await merge()
        if (merged) {
          const { added, unchanged, conflicts } = merged
          log.info({ usersFile: merged.file, movedTo: merged.movedTo, added, unchanged, conflicts: conflicts.length },
            `merged ${merged.file} into the cluster's user store: ${added} added, ${unchanged} already there; the file is now ${merged.movedTo}`)
          for (const name of conflicts) {
            log.warn({ username: name, usersFile: merged.movedTo, code: 'FLEETMQ_ERR_USER_EXISTS' },
              `user "${name}" of ${merged.file} has another password hash in the cluster; the cluster's is kept (set the one wanted with fleetmq user passwd ${name})`)
          }
        }
      }
      const count = await users.count()
      log.info({ users: count, where: users.where }, `user store ${users.where}: ${count} user${count === 1 ? '' : 's'}`)
      if (!config.allowAnonymous && count === 0 && cnListeners.size === 0) {
        log.warn({ code: 'FLEETMQ_ERR_ANONYMOUS_DISABLED', where: users.where },
          `no client can connect: the user store is empty and allowAnonymous is off; add a user with fleetmq user add NAME --data-dir ${config.dataDir} (it applies at once)`)
      }
    },
    attach(aedes) {
      users.onChange((change) => {
        recheck(aedes, change).catch((err: Error) => log.error({ err }, `could not re-check the sessions of changed users: ${err.message}`))
      })
    },
    mergeReport: () => merged,
    aclSource: acl,
    async authenticate(client, username, password) {
      const info = connectionInfo(client)
      const commonName = info?.tlsCommonName
      if (commonName !== undefined && info !== undefined && cnListeners.has(info.listener)) {
        return accept(client, await users.get(commonName), commonName, 'certificate')
      }
      if (username === undefined) {
        if (config.allowAnonymous) return accept(client, undefined, undefined, 'anonymous')
        return refuse(client, undefined, 'no username and allowAnonymous is off', NOT_AUTHORIZED)
      }
      if (password === undefined) return refuse(client, username, 'no password', BAD_CREDENTIALS)
      let verified: Awaited<ReturnType<PasswordVerifier['verify']>>
      try {
        verified = await verifier.verify(username, password)
      } catch (err) {
        if (!(err instanceof HashQueueFull)) throw err
        return refuse(client, username, err.message, SERVER_UNAVAILABLE)
      }
      const { user, cached, known } = verified
      if (!user) return refuse(client, username, known ? 'wrong password' : 'unknown user', BAD_CREDENTIALS)
      if (cached) authStats.cacheHits++
      return accept(client, user, username, 'password')
    },
    /**
     * An address in its login backoff is refused before any password is hashed: 0x9F Connection
     * rate exceeded (5.0) or 3 Server unavailable (3.1.1), which tell it to come back later and
     * nothing about the credentials.
     */
    preConnect(client) {
      const address = guardedAddress(client)
      const wait = guard.waitFor(address)
      if (wait === 0) return
      authStats.backoffRefusals++
      const message = `too many failed logins from ${address}; retry in ${Math.ceil(wait / 1000)} s (limits.loginFailuresBeforeBackoff)`
      log.info({ clientId: client.id, remoteAddress: address, waitMs: wait }, `refused ${client.id}: ${message}`)
      throw new ConnectRefusal(REASON.CONNECTION_RATE_EXCEEDED, RETURN_CODE.SERVER_UNAVAILABLE, message)
    },
    async authorizeMgmt(req) {
      const admin = await adminFromRequest(req)
      if (admin) return admin
      // Without a Basic header another check chained after this one (the cluster secret) may
      // still accept the request: only wrong Basic credentials are a failure here.
      const username = basicCredentials(req)?.username
      if (username !== undefined) {
        authStats.mgmtFailures++
        log.info({ remoteAddress: req.socket.remoteAddress, path: req.url, username }, 'management API: wrong credentials or not an admin')
      }
      return undefined
    },
    reload() {
      if (!users.reload) return
      try {
        const { count, warnings: reloadWarnings } = users.reload()
        for (const warning of reloadWarnings) log.warn(warning)
        log.info({ usersFile: users.where, users: count }, `reloaded the user store: ${count} user${count === 1 ? '' : 's'}; sessions of removed or changed users are closed`)
      } catch (err) {
        log.error({ err, usersFile: users.where }, `could not reload the user store, keeping the users read before: ${(err as Error).message}`)
      }
    },
    async close() {
      await users.close()
    },
  }
}
