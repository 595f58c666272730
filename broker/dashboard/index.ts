import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { dirname, join, resolve } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { fileURLToPath } from 'node:url'
import type { Logger } from '../log.js'
import { errorResult, type Principal, type Route } from '../mgmt/http.js'

/*
 * The web dashboard: static pages served at `/` and `/ui/…`, and browser sessions.
 *
 * A browser signs in once with an admin user's password or an API key (POST /ui/session) and gets
 * a session cookie: `HttpOnly` (page scripts cannot read it), `SameSite=Strict` (no other site's
 * request carries it), `Secure` when the request came over TLS. Any request that changes
 * something with only the cookie must also carry the session's CSRF token in `X-CSRF-Token`,
 * which only the node's own pages can read (GET /ui/session; the API answers no CORS), else 403.
 * The request guard (mgmt/request-guard.ts) already refuses cross-site requests; the token is the
 * second, independent defence.
 *
 * Sessions live in this node's memory: a restart signs everyone out, and a session opened on one
 * node is unknown to the others (the dashboard of a node talks to that node; the API answers for
 * the whole cluster).
 */

export const SESSION_COOKIE = 'fleetmq_session'
export const CSRF_HEADER = 'x-csrf-token'
/** A session ends this long after sign-in, whatever its use (ms). */
const SESSION_TTL_MS = 8 * 60 * 60 * 1000
/** Open sessions per node; the oldest is dropped beyond it, so sign-ins cannot grow memory without end. */
const MAX_SESSIONS = 10_000

interface Session {
  readonly principal: Principal
  readonly csrf: string
  readonly expires: number
  /** An API key's session re-checks the key on every request: a removed key ends it at once. */
  readonly apiKeyHeader?: string
  /**
   * A user's session re-checks the user on every request: removed, no longer an admin, or given
   * another password (the stored hash changed), and the session ends at once.
   */
  readonly userHash?: string
}

/** What a user session is re-checked against: the user's current record. */
export type UserRecord = (username: string) => Promise<{ readonly hash: string; readonly roles: readonly string[] } | undefined> | { readonly hash: string; readonly roles: readonly string[] } | undefined

const ASSETS: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
}

/** Where `npm run build` wrote the pages: next to this module once compiled, under build/ when run from source. */
export function assetsDir(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url))
  const candidates = [join(here, 'ui'), resolve(here, '../../build/broker/dashboard/ui')]
  return candidates.find((dir) => existsSync(join(dir, 'app.js')) && existsSync(join(dir, 'index.html')))
}

const sha = (text: string): Buffer => createHash('sha256').update(text).digest()
const sameSecret = (a: string, b: string): boolean => timingSafeEqual(sha(a), sha(b))

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=')
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim()
  }
  return undefined
}

const overTls = (req: IncomingMessage): boolean => (req.socket as TLSSocket).encrypted === true

/** The request as the API's authentication sees it, with the credentials typed in the sign-in form. */
function withAuthorization(req: IncomingMessage, authorization: string): IncomingMessage {
  return Object.assign(Object.create(req) as IncomingMessage, { headers: { ...req.headers, authorization } })
}

export interface Dashboard {
  readonly routes: Route[]
  /**
   * The principal of a request carrying a dashboard session cookie and no Authorization header;
   * throws a 403 for a change (not GET/HEAD) without the session's CSRF token.
   */
  sessionPrincipal(req: IncomingMessage): Promise<Principal | undefined>
}

export function createDashboard(options: { log: Logger; authenticate(req: IncomingMessage): Promise<Principal | undefined>; userRecord?: UserRecord; now?: () => number }): Dashboard {
  const { log, authenticate } = options
  const now = options.now ?? Date.now
  const sessions = new Map<string, Session>()
  const dir = assetsDir()
  const files = new Map<string, string>()
  if (dir) for (const name of Object.keys(ASSETS)) files.set(name, readFileSync(join(dir, name), 'utf8'))
  else log.warn('the dashboard pages are missing (run npm run build); the management port serves the API only')

  const current = (req: IncomingMessage): { id: string; session: Session } | undefined => {
    const id = cookieOf(req, SESSION_COOKIE)
    if (!id) return undefined
    const session = sessions.get(id)
    if (!session) return undefined
    if (session.expires <= now()) {
      sessions.delete(id)
      return undefined
    }
    return { id, session }
  }

  const asset = (name: string): Route['handle'] => () => {
    const body = files.get(name)
    if (body === undefined) return errorResult(404, 'NOT_FOUND', 'the dashboard is not built on this node: run npm run build (the bundle ships it built)')
    return {
      status: 200,
      body,
      contentType: ASSETS[name],
      // The pages load nothing from elsewhere; a strict policy keeps an injected script from running.
      headers: { 'content-security-policy': "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'", 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY' },
    }
  }

  const sessionAnswer = (session: Session): Record<string, unknown> => ({ name: session.principal.name, kind: session.principal.kind, role: session.principal.role, csrfToken: session.csrf })

  const routes: Route[] = [
    { method: 'GET', path: '/', public: true, handle: asset('index.html') },
    ...Object.keys(ASSETS).map((name): Route => ({ method: 'GET', path: `/ui/${name}`, public: true, handle: asset(name) })),
    {
      method: 'GET', path: '/ui/session', public: true,
      handle: (req) => {
        const found = current(req)
        return found ? { status: 200, body: sessionAnswer(found.session) } : errorResult(401, 'UNAUTHORIZED', 'not signed in: POST /ui/session with {"username","password"} of an admin user or {"apiKey"}')
      },
    },
    {
      method: 'POST', path: '/ui/session', public: true,
      handle: async (req, raw) => {
        let body: { username?: unknown; password?: unknown; apiKey?: unknown }
        try {
          body = JSON.parse(raw.toString('utf8')) as typeof body
        } catch {
          return errorResult(400, 'BAD_REQUEST', 'send JSON: {"username","password"} of an admin user, or {"apiKey"}', 'body')
        }
        let authorization: string
        if (typeof body?.apiKey === 'string' && body.apiKey !== '') authorization = `Bearer ${body.apiKey}`
        else if (typeof body?.username === 'string' && body.username !== '' && typeof body.password === 'string') authorization = `Basic ${Buffer.from(`${body.username}:${body.password}`).toString('base64')}`
        else return errorResult(400, 'BAD_REQUEST', 'give either username and password (an admin user) or apiKey', 'body')
        const principal = await authenticate(withAuthorization(req, authorization))
        if (!principal) return errorResult(401, 'UNAUTHORIZED', 'wrong user name or password (the user must be an admin), or an unknown API key')
        if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value as string)
        const id = randomBytes(32).toString('base64url')
        const userHash = principal.kind === 'user' ? (await options.userRecord?.(principal.name))?.hash : undefined
        const session: Session = {
          principal,
          csrf: randomBytes(32).toString('base64url'),
          expires: now() + SESSION_TTL_MS,
          ...(principal.kind === 'apikey' ? { apiKeyHeader: authorization } : {}),
          ...(userHash !== undefined ? { userHash } : {}),
        }
        sessions.set(id, session)
        log.info({ remoteAddress: req.socket.remoteAddress, name: principal.name, kind: principal.kind }, `dashboard sign-in: ${principal.name} (${principal.role})`)
        const cookie = `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}${overTls(req) ? '; Secure' : ''}`
        return { status: 200, body: sessionAnswer(session), headers: { 'set-cookie': cookie } }
      },
    },
    {
      method: 'DELETE', path: '/ui/session', public: true,
      handle: (req) => {
        const found = current(req)
        if (found) {
          const token = req.headers[CSRF_HEADER]
          if (typeof token !== 'string' || !sameSecret(token, found.session.csrf)) return errorResult(403, 'FORBIDDEN', `signing out needs the session's CSRF token in ${CSRF_HEADER}`)
          sessions.delete(found.id)
        }
        return { status: 204, body: null, headers: { 'set-cookie': `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${overTls(req) ? '; Secure' : ''}` } }
      },
    },
  ]

  return {
    routes,
    async sessionPrincipal(req) {
      // Credentials in the request win: a cookie never widens what a header-authenticated client may do.
      if (req.headers.authorization !== undefined) return undefined
      const found = current(req)
      if (!found) return undefined
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        const token = req.headers[CSRF_HEADER]
        if (typeof token !== 'string' || !sameSecret(token, found.session.csrf)) {
          throw Object.assign(new Error(`a change made with the dashboard's session cookie needs its CSRF token in the ${CSRF_HEADER} header (the dashboard sends it; other clients use Authorization)`), { statusCode: 403 })
        }
      }
      if (found.session.apiKeyHeader !== undefined) {
        const still = await authenticate(withAuthorization(req, found.session.apiKeyHeader))
        if (!still) {
          sessions.delete(found.id)
          return undefined
        }
        return still
      }
      if (found.session.principal.kind === 'user' && options.userRecord) {
        const user = await options.userRecord(found.session.principal.name)
        if (!user || !user.roles.includes('admin') || user.hash !== found.session.userHash) {
          sessions.delete(found.id)
          log.info({ name: found.session.principal.name }, `dashboard session of ${found.session.principal.name} ended: the user was removed, is no longer an admin, or has a new password`)
          return undefined
        }
      }
      return found.session.principal
    },
  }
}
