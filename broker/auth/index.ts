import type { Client } from 'aedes'
import type { IncomingMessage } from 'node:http'
import type { Config, ListenerConfig } from '../config/schema.js'
import { connectionInfo } from '../connection-info.js'
import type { Feature } from '../hooks.js'
import { listenerName } from '../listeners/index.js'
import type { Logger } from '../log.js'
import type { Route } from '../mgmt/http.js'
import { clientAddress, setClientIdentity } from './identity.js'
import { decoyHash } from './password.js'
import { UserStore, usersFilePath, type StoredUser } from './users.js'

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
}

/** aedes maps `returnCode` 4 to CONNACK 0x86 and 5 to 0x87 for 5.0 clients. */
const BAD_CREDENTIALS = 4
const NOT_AUTHORIZED = 5

function refusal(message: string, returnCode: number): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode })
}

export interface AuthFeature extends Feature {
  readonly store: UserStore
  /** True when `req` carries HTTP Basic credentials of an admin user. Chain other checks in main.ts. */
  authorizeMgmt(req: IncomingMessage): Promise<boolean>
  /** `GET /api/v1/whoami`: the admin user the request authenticated as. */
  readonly routes: readonly Route[]
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

export function authFeature(config: Config, log: Logger): AuthFeature {
  const { store, warnings } = UserStore.load(usersFilePath(config))
  // Made now so that the first unknown username is not slower than the next ones.
  void decoyHash()
  for (const warning of warnings) log.warn(warning)
  const cnListeners = new Map<string, ListenerConfig>(
    config.listeners.filter((l) => l.tls?.useCnAsUsername).map((l) => [listenerName(l), l]),
  )
  if (config.allowAnonymous) {
    log.warn('allowAnonymous is on: clients without credentials can connect. Use this for development only.')
  }
  log.info({ usersFile: store.file, users: store.size }, `user store ${store.file}: ${store.size} user${store.size === 1 ? '' : 's'}`)
  if (!config.allowAnonymous && store.size === 0 && cnListeners.size === 0) {
    log.warn({ code: 'FLEETMQ_ERR_ANONYMOUS_DISABLED', usersFile: store.file },
      `no client can connect: the user store is empty and allowAnonymous is off; add a user with fleetmq user add NAME --data-dir ${config.dataDir}, then send SIGHUP`)
  }

  const refuse = (client: Client, username: string | undefined, reason: string, returnCode: number): never => {
    authStats.failures++
    log.info({ clientId: client.id, username, remoteAddress: clientAddress(client), listener: connectionInfo(client)?.listener, reason },
      `authentication failed for client ${client.id}: ${reason}`)
    throw refusal(returnCode === BAD_CREDENTIALS ? 'Bad User Name or Password' : 'Not authorized', returnCode)
  }
  const accept = (client: Client, user: StoredUser | undefined, username: string | undefined, method: 'password' | 'certificate' | 'anonymous'): true => {
    authStats.successes++
    setClientIdentity(client, { username, roles: user?.roles ?? [], method })
    log.debug({ clientId: client.id, username, method }, 'authenticated')
    return true
  }

  const adminFromRequest = async (req: IncomingMessage): Promise<StoredUser | undefined> => {
    const credentials = basicCredentials(req)
    if (!credentials) return undefined
    const { user } = await store.verify(credentials.username, credentials.password)
    return user?.roles.includes('admin') ? user : undefined
  }

  return {
    name: 'auth',
    store,
    async authenticate(client, username, password) {
      const info = connectionInfo(client)
      const commonName = info?.tlsCommonName
      if (commonName !== undefined && info !== undefined && cnListeners.has(info.listener)) {
        return accept(client, store.get(commonName), commonName, 'certificate')
      }
      if (username === undefined) {
        if (config.allowAnonymous) return accept(client, undefined, undefined, 'anonymous')
        return refuse(client, undefined, 'no username and allowAnonymous is off', NOT_AUTHORIZED)
      }
      if (password === undefined) return refuse(client, username, 'no password', BAD_CREDENTIALS)
      const { user, cached } = await store.verify(username, password)
      if (!user) return refuse(client, username, store.get(username) ? 'wrong password' : 'unknown user', BAD_CREDENTIALS)
      if (cached) authStats.cacheHits++
      return accept(client, user, username, 'password')
    },
    async authorizeMgmt(req) {
      if (await adminFromRequest(req)) return true
      // Without a Basic header another check chained after this one (the cluster secret) may
      // still accept the request: only wrong Basic credentials are a failure here.
      const username = basicCredentials(req)?.username
      if (username !== undefined) {
        authStats.mgmtFailures++
        log.info({ remoteAddress: req.socket.remoteAddress, path: req.url, username }, 'management API: wrong credentials or not an admin')
      }
      return false
    },
    routes: [
      {
        method: 'GET',
        path: '/api/v1/whoami',
        async handle(req) {
          const user = await adminFromRequest(req)
          return { status: 200, body: user ? { username: user.username, roles: user.roles } : { username: null, roles: [] } }
        },
      },
    ],
    reload() {
      try {
        const { count, warnings: reloadWarnings } = store.reload()
        for (const warning of reloadWarnings) log.warn(warning)
        log.info({ usersFile: store.file, users: count }, `reloaded the user store: ${count} user${count === 1 ? '' : 's'}; connected clients stay connected`)
      } catch (err) {
        log.error({ err, usersFile: store.file }, `could not reload the user store, keeping the ${store.size} users loaded before: ${(err as Error).message}`)
      }
    },
  }
}
