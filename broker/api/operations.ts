import type { Aedes, AedesPublishPacket } from 'aedes'
import type { Config, AclSettings, AclRule } from '../config/schema.js'
import { aclSettingsSchema } from '../config/schema.js'
import { compileRules } from '../auth/acl-rules.js'
import { banValueProblem, type BanKind, type BanRecord, type Bans } from '../auth/bans.js'
import { hashPassword, HashQueueFull } from '../auth/password.js'
import type { UserAdmin } from '../auth/user-store.js'
import { usernameProblem, type StoredUser } from '../auth/users.js'
import type { NodeStatus } from '../cluster/membership.js'
import type { Gathered, NodeRpc } from '../cluster/node-rpc.js'
import { isFleetmqError } from '../errors.js'
import type { ApiKeys } from '../mgmt/apikeys.js'
import type { Principal, RouteResult } from '../mgmt/http.js'
import { brokerInternals, type AedesPersistence } from '../core/aedes-adapter.js'
import { topicLevels, topicMatches } from '../mqtt/topic.js'
import type { ClientFilter, ClientView, Slice, SubscriptionView } from './node-view.js'

/*
 * The management API's operations, one core call each, by the OpenAPI document's operationId. The
 * router (api/routes.ts) has validated parameters and body against the document before a call
 * runs; what the document cannot say (a topic with a wildcard, an address that is not one) is
 * checked here, with the field named. Cluster-wide answers come from every node through node
 * calls (cluster/node-rpc.ts): each node answers for its own clients.
 */

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly field?: string) {
    super(message)
  }
}

const invalid = (field: string, message: string): ApiError => new ApiError(400, 'BAD_REQUEST', message, field)
const notFound = (message: string): ApiError => new ApiError(404, 'NOT_FOUND', message)
const conflict = (message: string): ApiError => new ApiError(409, 'CONFLICT', message)

export interface ApiInput {
  readonly params: Readonly<Record<string, unknown>>
  readonly query: Readonly<Record<string, unknown>>
  readonly body: Readonly<Record<string, unknown>>
  readonly principal: Principal
}

export type Operation = (input: ApiInput) => Promise<RouteResult>

/** The calls every node answers for its own clients (names as node-rpc sends them). */
export const NODE_CALLS = {
  clients: 'clients.list',
  client: 'clients.get',
  kick: 'clients.kick',
  subscriptions: 'subscriptions.list',
  refreshBans: 'bans.refresh',
} as const

export interface AclPlace {
  read(): Promise<{ acl: AclSettings; where: string; editable: boolean }>
  /** Throws ApiError 409 where it cannot be changed (a standalone node's config). */
  write(acl: AclSettings): Promise<void>
}

export interface OperationDeps {
  readonly config: Config
  nodes(): Promise<NodeStatus[]>
  rpc(): NodeRpc
  broker(): Aedes | undefined
  readonly bans: Bans
  readonly apiKeys: ApiKeys
  users(): UserAdmin
  readonly acl: AclPlace
}

interface Page {
  readonly page: number
  readonly limit: number
}

const pageOf = (query: ApiInput['query']): Page => ({ page: query.page as number, limit: query.limit as number })

function paged<T>(items: readonly T[], { page, limit }: Page, count = items.length, incomplete = false): RouteResult {
  const start = (page - 1) * limit
  return {
    status: 200,
    body: { data: items.slice(start, start + limit), meta: { page, limit, count, hasNext: start + limit < count, ...(incomplete ? { incomplete: true } : {}) } },
  }
}

/** Every node's first `take` items merged in order; the count is the sum of each node's. */
function merged<T>(gathered: Gathered<Slice<T>>, order: (a: T, b: T) => number): { items: T[]; count: number; incomplete: boolean } {
  const items: T[] = []
  let count = 0
  let incomplete = gathered.missing > 0
  for (const answer of gathered.answers) {
    if (answer.result === undefined) {
      incomplete = true
      continue
    }
    count += answer.result.count
    items.push(...answer.result.items)
  }
  return { items: items.sort(order), count, incomplete }
}

const byString = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)
const byClient = (a: { clientid: string }, b: { clientid: string }): number => byString(a.clientid, b.clientid)

/** No lone UTF-16 surrogate: the text has a UTF-8 form [MQTT-1.5.4-1]. */
const wellFormed = (text: string): boolean => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text)

/** Why `topic` cannot be published to, or undefined. */
function topicProblem(topic: string, config: Config): string | undefined {
  if (/[+#]/.test(topic)) return 'a topic name has no wildcards (+ or #) [MQTT-3.3.2-2]'
  if (topic.includes('\u0000')) return 'a topic name cannot hold U+0000 [MQTT-1.5.4-2]'
  if (!wellFormed(topic)) return 'the topic is not valid UTF-8 (a lone surrogate) [MQTT-1.5.4-1]'
  if (topic.startsWith('$')) return 'topics starting with $ are the broker\'s ($SYS) [MQTT-4.7.2-1]'
  if (Buffer.byteLength(topic) > config.limits.maxTopicLength) return `the topic is longer than limits.maxTopicLength (${config.limits.maxTopicLength} bytes)`
  if (topicLevels(topic) > config.limits.maxTopicLevels) return `the topic has more than limits.maxTopicLevels (${config.limits.maxTopicLevels}) levels`
  return undefined
}

/** Why `filter` is not a topic filter, or undefined [MQTT-4.7.1]. */
function filterProblem(filter: string): string | undefined {
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return '# must be a whole level, and the last one [MQTT-4.7.1-2]'
    if (level.includes('+') && level !== '+') return '+ must be a whole level [MQTT-4.7.1-3]'
  }
  if (filter.includes('\u0000') || !wellFormed(filter)) return 'the filter is not valid UTF-8 without U+0000 [MQTT-1.5.4]'
  return undefined
}

function decodePayload(text: string, encoding: string, field: string): Buffer {
  if (encoding === 'plain') return Buffer.from(text, 'utf8')
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw invalid(field, `${field} is not base64 (encoding: base64)`)
  return Buffer.from(text, 'base64')
}

interface RetainedPacket {
  readonly topic: string
  readonly payload: Buffer | string
  readonly qos?: number
}

function retainedView(packet: RetainedPacket): Record<string, unknown> {
  const bytes = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
  const text = bytes.toString('utf8')
  const plain = Buffer.from(text, 'utf8').equals(bytes)
  return { topic: packet.topic, payload: plain ? text : bytes.toString('base64'), encoding: plain ? 'plain' : 'base64', qos: packet.qos ?? 0, bytes: bytes.length }
}

const userView = (user: StoredUser): Record<string, unknown> => ({ username: user.username, roles: user.roles, created: user.created })

/** A user store error as the API answers it. */
async function userCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    if (isFleetmqError(err) && err.code === 'FLEETMQ_ERR_USER_EXISTS') throw conflict(err.message)
    if (isFleetmqError(err) && err.code === 'FLEETMQ_ERR_USER_UNKNOWN') throw notFound(err.message)
    throw err
  }
}

async function hashOf(password: string): Promise<string> {
  // The schema bounds the length in characters; these are what `fleetmq user` refuses too.
  if (Buffer.byteLength(password) > 1024) throw invalid('body.password', 'body.password is longer than 1024 bytes')
  if (/[\r\n]/.test(password)) throw invalid('body.password', 'body.password holds a line break')
  try {
    return await hashPassword(password)
  } catch (err) {
    if (err instanceof HashQueueFull) throw new ApiError(503, 'UNAVAILABLE', err.message)
    throw err
  }
}

function aclProblem(acl: unknown, field: string): AclSettings {
  const parsed = aclSettingsSchema.safeParse(acl)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = [field, ...issue.path.map(String)].join('.')
    throw invalid(where, `${where}: ${issue.message}`)
  }
  try {
    compileRules(parsed.data.rules)
  } catch (err) {
    throw invalid(`${field}.rules`, (err as Error).message)
  }
  return parsed.data
}

export function createOperations(deps: OperationDeps): Record<string, Operation> {
  const { config, bans, apiKeys } = deps

  const aclView = async (): Promise<RouteResult> => {
    const { acl, where, editable } = await deps.acl.read()
    return { status: 200, body: { default: acl.default, rules: acl.rules, where, editable } }
  }
  const persistence = (): AedesPersistence => {
    const broker = deps.broker()
    if (!broker) throw new ApiError(503, 'UNAVAILABLE', 'the node is still starting; retry')
    return brokerInternals(broker).persistence
  }
  const retained = async (filter: string): Promise<RetainedPacket[]> => {
    const out: RetainedPacket[] = []
    for await (const packet of persistence().createRetainedStreamCombi([filter]) as AsyncIterable<RetainedPacket>) {
      // The persistence matches with its own trie; keep only what the MQTT rules match [MQTT-4.7].
      if (topicMatches(filter, packet.topic)) out.push(packet)
    }
    return out.sort((a, b) => byString(a.topic, b.topic))
  }

  return {
    async whoami({ principal }) {
      const user = principal.kind === 'user'
      return { status: 200, body: { username: user ? principal.name : null, roles: user ? ['admin'] : [], kind: principal.kind, name: principal.name, role: principal.role } }
    },

    async listNodes({ query }) {
      const all = await deps.nodes()
      const nodes = query.status === undefined ? all : all.filter((n) => n.health === query.status)
      return paged(nodes, pageOf(query))
    },

    async listClients({ query }) {
      const page = pageOf(query)
      const filter: ClientFilter = {
        ...(query.clientid !== undefined ? { clientid: query.clientid as string } : {}),
        ...(query.username !== undefined ? { username: query.username as string } : {}),
        ...(query.ip !== undefined ? { ip: query.ip as string } : {}),
        ...(query.node !== undefined ? { node: query.node as string } : {}),
      }
      const gathered = await deps.rpc().call<Slice<ClientView>>(NODE_CALLS.clients, { filter, take: page.page * page.limit })
      const { items, count, incomplete } = merged(gathered, byClient)
      return paged(items, page, count, incomplete)
    },

    async getClient({ params }) {
      const gathered = await deps.rpc().call<ClientView | null>(NODE_CALLS.client, { clientid: params.clientid })
      const found = gathered.answers.find((a) => a.result)
      if (!found?.result) throw notFound(`no client "${String(params.clientid)}" is connected to any node${gathered.missing ? ` that answered (${gathered.missing} did not)` : ''}`)
      return { status: 200, body: found.result }
    },

    async kickClient({ params, principal }) {
      const gathered = await deps.rpc().call<boolean>(NODE_CALLS.kick, { clientid: params.clientid, by: principal.name })
      const holder = gathered.answers.find((a) => a.result === true)
      if (!holder) throw notFound(`no client "${String(params.clientid)}" is connected to any node${gathered.missing ? ` that answered (${gathered.missing} did not)` : ''}`)
      return { status: 200, body: { clientid: params.clientid, node: holder.node } }
    },

    async listClientSubscriptions({ params, query }) {
      const page = pageOf(query)
      const client = await deps.rpc().call<ClientView | null>(NODE_CALLS.client, { clientid: params.clientid })
      if (!client.answers.some((a) => a.result)) throw notFound(`no client "${String(params.clientid)}" is connected to any node`)
      const gathered = await deps.rpc().call<Slice<SubscriptionView>>(NODE_CALLS.subscriptions, { filter: { clientid: params.clientid }, take: page.page * page.limit })
      const { items, count, incomplete } = merged(gathered, (a, b) => byString(a.topic, b.topic))
      return paged(items, page, count, incomplete)
    },

    async listSubscriptions({ query }) {
      const page = pageOf(query)
      const filter = {
        ...(query.topic !== undefined ? { topic: query.topic as string } : {}),
        ...(query.clientid !== undefined ? { clientid: query.clientid as string } : {}),
      }
      const gathered = await deps.rpc().call<Slice<SubscriptionView>>(NODE_CALLS.subscriptions, { filter, take: page.page * page.limit })
      const { items, count, incomplete } = merged(gathered, (a, b) => byClient(a, b) || byString(a.topic, b.topic))
      return paged(items, page, count, incomplete)
    },

    async publish({ body }) {
      const topic = body.topic as string
      const problem = topicProblem(topic, config)
      if (problem) throw invalid('body.topic', `body.topic: ${problem}`)
      const payload = decodePayload(body.payload as string, body.encoding as string, 'body.payload')
      if (payload.length > config.limits.maxPacketSize) throw invalid('body.payload', `body.payload is larger than limits.maxPacketSize (${config.limits.maxPacketSize} bytes)`)
      const given = body.properties as Record<string, unknown> | undefined
      let properties: Record<string, unknown> | undefined
      if (given) {
        if (given.responseTopic !== undefined) {
          const responseProblem = topicProblem(given.responseTopic as string, config)
          if (responseProblem) throw invalid('body.properties.responseTopic', `body.properties.responseTopic: ${responseProblem}`)
        }
        properties = {
          ...(given.payloadFormatIndicator !== undefined ? { payloadFormatIndicator: given.payloadFormatIndicator } : {}),
          ...(given.messageExpiryInterval !== undefined ? { messageExpiryInterval: given.messageExpiryInterval } : {}),
          ...(given.contentType !== undefined ? { contentType: given.contentType } : {}),
          ...(given.responseTopic !== undefined ? { responseTopic: given.responseTopic } : {}),
          ...(given.correlationData !== undefined ? { correlationData: decodePayload(given.correlationData as string, 'base64', 'body.properties.correlationData') } : {}),
          ...(given.userProperties !== undefined ? { userProperties: given.userProperties } : {}),
        }
        // [MQTT-3.3.2-4] a payload said to be UTF-8 must be.
        if (given.payloadFormatIndicator === true && !Buffer.from(payload.toString('utf8')).equals(payload)) {
          throw invalid('body.properties.payloadFormatIndicator', 'body.properties.payloadFormatIndicator is true but the payload is not valid UTF-8')
        }
      }
      const broker = deps.broker()
      if (!broker) throw new ApiError(503, 'UNAVAILABLE', 'the node is still starting; retry')
      const packet = { cmd: 'publish', topic, payload, qos: body.qos, retain: body.retain, dup: false, ...(properties ? { properties } : {}) } as unknown as AedesPublishPacket
      await new Promise<void>((resolve, reject) => broker.publish(packet, (err?: Error) => (err ? reject(new ApiError(503, 'UNAVAILABLE', `the message could not be routed: ${err.message}`)) : resolve())))
      return { status: 200, body: { topic, qos: body.qos, retain: body.retain, bytes: payload.length } }
    },

    async listRetained({ query }) {
      const filter = query.topic as string
      const problem = filterProblem(filter)
      if (problem) throw invalid('query.topic', `query.topic: ${problem}`)
      const all = await retained(filter)
      return paged(all.map(retainedView), pageOf(query))
    },

    async getRetained({ params }) {
      const topic = params.topic as string
      if (/[+#]/.test(topic)) throw invalid('path.topic', 'path.topic is a topic name, without + or #; list with GET /api/v1/retained?topic=FILTER')
      const [found] = await retained(topic)
      if (!found) throw notFound(`no retained message on ${topic}`)
      return { status: 200, body: retainedView(found) }
    },

    async deleteRetained({ params }) {
      const topic = params.topic as string
      if (/[+#]/.test(topic)) throw invalid('path.topic', 'path.topic is a topic name, without + or #')
      const [found] = await retained(topic)
      if (!found) throw notFound(`no retained message on ${topic}`)
      // [MQTT-3.3.1-6] an empty retained payload removes it; stored directly, so no subscriber gets an empty message.
      await persistence().storeRetained({ cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false } as AedesPublishPacket)
      return { status: 204, body: undefined }
    },

    async listUsers({ query }) {
      const users = await deps.users().list()
      return paged(users.sort((a, b) => byString(a.username, b.username)).map(userView), pageOf(query))
    },

    async getUser({ params }) {
      const user = await deps.users().get(params.username as string)
      if (!user) throw notFound(`no user "${String(params.username)}"`)
      return { status: 200, body: userView(user) }
    },

    async createUser({ body }) {
      const username = body.username as string
      const problem = usernameProblem(username)
      if (problem) throw invalid('body.username', `body.username: ${problem}`)
      if (await deps.users().get(username)) throw conflict(`user "${username}" exists; change it with PATCH /api/v1/users/${encodeURIComponent(username)}`)
      const user: StoredUser = { username, hash: await hashOf(body.password as string), roles: body.admin === true ? ['admin'] : [], created: new Date().toISOString() }
      await userCall(() => deps.users().add(user))
      return { status: 201, body: userView(user) }
    },

    async updateUser({ params, body }) {
      const username = params.username as string
      const change: Partial<Pick<StoredUser, 'hash' | 'roles'>> = {
        ...(body.password !== undefined ? { hash: await hashOf(body.password as string) } : {}),
        ...(body.admin !== undefined ? { roles: body.admin === true ? ['admin' as const] : [] } : {}),
      }
      await userCall(() => deps.users().update(username, change))
      const user = await deps.users().get(username)
      if (!user) throw notFound(`no user "${username}"`)
      return { status: 200, body: userView(user) }
    },

    async deleteUser({ params }) {
      await userCall(() => deps.users().remove(params.username as string))
      return { status: 204, body: undefined }
    },

    getAcl: aclView,

    async setAcl({ body }) {
      await deps.acl.write(aclProblem(body, 'body'))
      return aclView()
    },

    async addAclRule({ body }) {
      const { acl } = await deps.acl.read()
      const next = aclProblem({ default: acl.default, rules: [...acl.rules, body as unknown as AclRule] }, 'body')
      await deps.acl.write(next)
      const view = await aclView()
      return { ...view, status: 201 }
    },

    async deleteAclRule({ params }) {
      const index = params.index as number
      const { acl } = await deps.acl.read()
      if (index >= acl.rules.length) throw notFound(`the ACL has ${acl.rules.length} rule${acl.rules.length === 1 ? '' : 's'}; there is no rule ${index} (they count from 0)`)
      await deps.acl.write({ default: acl.default, rules: acl.rules.filter((_, i) => i !== index) })
      return aclView()
    },

    async listBans({ query }) {
      return paged(await bans.list(), pageOf(query))
    },

    async addBan({ body, principal }) {
      const kind = body.kind as BanKind
      const value = body.value as string
      const problem = banValueProblem(kind, value)
      if (problem) throw invalid('body.value', `body.value: ${problem}`)
      const now = Date.now()
      const ban: BanRecord = {
        kind,
        value,
        reason: (body.reason as string | undefined) ?? null,
        until: body.duration !== undefined ? new Date(now + (body.duration as number) * 1000).toISOString() : null,
        created: new Date(now).toISOString(),
        by: principal.name,
      }
      if (!(await bans.add(ban))) throw conflict(`${kind} ${value} is banned already; lift it first (DELETE /api/v1/banned/${kind}/${encodeURIComponent(value)})`)
      // Every node reads the bans again now and disconnects its clients that match.
      const gathered = await deps.rpc().call<string[]>(NODE_CALLS.refreshBans, {})
      const kicked = gathered.answers.flatMap((a) => a.result ?? []).sort()
      return { status: 201, body: { ban, kicked } }
    },

    async removeBan({ params }) {
      const kind = params.kind as BanKind
      if (!(await bans.remove(kind, params.value as string))) throw notFound(`${kind} ${String(params.value)} is not banned`)
      await deps.rpc().call(NODE_CALLS.refreshBans, {})
      return { status: 204, body: undefined }
    },

    async listApiKeys({ query }) {
      return paged(await apiKeys.list(), pageOf(query))
    },

    async createApiKey({ body }) {
      const made = await apiKeys.add(body.name as string, body.role as 'viewer' | 'operator' | 'admin')
      if (!made) throw conflict(`an API key named "${String(body.name)}" exists; remove it first or choose another name`)
      return { status: 201, body: { ...made.info, key: made.key } }
    },

    async deleteApiKey({ params }) {
      if (!(await apiKeys.remove(params.name as string))) throw notFound(`no API key named "${String(params.name)}"`)
      return { status: 204, body: undefined }
    },
  }
}
