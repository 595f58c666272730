import { FLEETMQ_VERSION } from '../version.js'

/*
 * The management API v1, described once: this document is served at /api/v1/openapi.json, and the
 * server validates every request's parameters and body against it (api/validate.ts) before a
 * handler runs, so that the document and the behaviour cannot drift apart. Property-based tests
 * (Schemathesis, test/api/openapi.test.ts) generate requests from it and check the answers.
 *
 * Each operation's `x-role` is the least role its caller needs (viewer, operator, admin); the
 * router (api/routes.ts) reads it from here too.
 */

type Schema = Record<string, unknown>

const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` })
const json = (schema: Schema): Schema => ({ content: { 'application/json': { schema } } })
const ok = (description: string, schema: Schema): Schema => ({ description, ...json(schema) })
const errorResponse = (description: string): Schema => ({ description, ...json(ref('Error')) })

/** Errors every authenticated operation may answer. */
const COMMON_ERRORS = {
  400: errorResponse('a parameter or the body is invalid; `field` names it'),
  401: errorResponse('no credentials, or wrong ones'),
  403: errorResponse('the credentials do not carry the role this operation needs'),
  503: errorResponse('the node cannot answer now (Redis unreachable, busy hashing passwords); retry'),
}

const page = { name: 'page', in: 'query', description: 'page number, from 1', schema: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 1 } }
const limit = { name: 'limit', in: 'query', description: 'items per page', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } }
/**
 * Parameters travel in the request line, which the management port takes up to 16 KiB (Node's
 * header limit): 1024 characters fit even when each is a percent-encoded 4-byte UTF-8 sequence.
 */
const PARAMETER_MAX = 1024
const text = { type: 'string', minLength: 1, maxLength: PARAMETER_MAX }
const query = (name: string, description: string, schema: Schema = text): Schema => ({ name, in: 'query', description, schema })
const pathParam = (name: string, description: string, schema: Schema = text): Schema => ({ name, in: 'path', required: true, description, schema })

/** [MQTT-4.7.1] '+' and '#' only as whole levels, '#' only last. */
const TOPIC_FILTER = '^(#|([^/+#]*|\\+)(/([^/+#]*|\\+))*(/#)?)$'
/** An IPv4 or IPv6 address, optionally with a /prefix; the server checks it is a real one. */
const ADDRESS = '^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$'

const pageOf = (item: string): Schema => ({
  type: 'object',
  required: ['data', 'meta'],
  properties: { data: { type: 'array', items: ref(item) }, meta: ref('Meta') },
})

interface Operation {
  operationId: string
  summary: string
  'x-role': 'viewer' | 'operator' | 'admin'
  parameters?: Schema[]
  requestBody?: Schema
  responses: Record<string, Schema>
}

const op = (operation: Operation): Operation => ({ ...operation, responses: { ...operation.responses, ...COMMON_ERRORS } })
const body = (name: string): Schema => ({ required: true, ...json(ref(name)) })

const clientIdParam = pathParam('clientid', 'the MQTT client identifier, percent-encoded')
const topicParam = pathParam('topic', 'the topic name, percent-encoded (a/b is a%2Fb); no + or #', { ...text, pattern: '^[^+#]*$' })
const usernameParam = pathParam('username', 'the username', { type: 'string', minLength: 1, maxLength: 128 })
const apiKeyNameParam = pathParam('name', 'the API key\'s name', { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' })

const SCHEMAS: Record<string, Schema> = {
  Error: {
    type: 'object',
    required: ['code', 'message'],
    properties: {
      code: { type: 'string', description: 'stable, for programs: BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, …' },
      message: { type: 'string', description: 'what happened and what to do' },
      field: { type: 'string', description: 'the parameter or body field at fault (`body.qos`, `query.limit`)' },
      error: { type: 'string', description: 'the message again, for clients of the routes that predate v1' },
    },
  },
  Meta: {
    type: 'object',
    required: ['page', 'limit', 'count', 'hasNext'],
    properties: {
      page: { type: 'integer', minimum: 1 },
      limit: { type: 'integer', minimum: 1 },
      count: { type: 'integer', minimum: 0, description: 'items matching the filters, on every page' },
      hasNext: { type: 'boolean' },
      incomplete: { type: 'boolean', description: 'true when a node did not answer in time: the list lacks its items' },
    },
  },
  Node: {
    type: 'object',
    required: ['id', 'self', 'health', 'version', 'uptime', 'connections', 'msgInRate', 'msgOutRate', 'mqtt'],
    properties: {
      id: { type: 'string' },
      self: { type: 'boolean', description: 'the node that answered' },
      health: { type: 'string', enum: ['up', 'down', 'left'] },
      version: { type: 'string' },
      uptime: { type: 'integer', description: 'seconds' },
      connections: { type: 'integer', minimum: 0 },
      msgInRate: { type: 'number', description: 'messages per second published on the node' },
      msgOutRate: { type: 'number', description: 'messages per second delivered by the node' },
      mgmt: { type: 'string', description: 'management API host:port' },
      mqtt: { type: 'array', items: { type: 'string' } },
      lastSeenAgo: { type: 'number', description: 'seconds since its last heartbeat' },
      host: { type: 'string', description: 'the host\'s name' },
      system: ref('HostStats'),
    },
  },
  HostStats: {
    type: 'object',
    properties: {
      cpus: { type: 'integer' },
      cpuPercent: { type: 'number', description: 'busy share of all the host\'s CPUs over the last heartbeat interval' },
      load: { type: 'array', items: { type: 'number' }, description: '1, 5 and 15 minute load averages' },
      memoryTotal: { type: 'integer', description: 'bytes' },
      memoryFree: { type: 'integer', description: 'bytes' },
      processRss: { type: 'integer', description: 'the node process\'s resident memory, bytes' },
      processCpuPercent: { type: 'number', description: 'the node process\'s CPU time over the last interval, % of one core' },
    },
  },
  Client: {
    type: 'object',
    required: ['clientid', 'username', 'ip', 'node', 'protocolVersion', 'cleanSession', 'subscriptions'],
    properties: {
      clientid: { type: 'string' },
      username: { type: ['string', 'null'] },
      ip: { type: ['string', 'null'], description: 'the real client address (behind the load balancer\'s PROXY header)' },
      port: { type: ['integer', 'null'] },
      node: { type: 'string', description: 'the node the client is connected to' },
      listener: { type: ['string', 'null'] },
      protocolVersion: { type: 'integer', description: '3 (3.1), 4 (3.1.1) or 5' },
      cleanSession: { type: 'boolean' },
      connectedAt: { type: ['string', 'null'], format: 'date-time' },
      subscriptions: { type: 'integer', minimum: 0 },
    },
  },
  Subscription: {
    type: 'object',
    required: ['clientid', 'node', 'topic', 'qos'],
    properties: {
      clientid: { type: 'string' },
      node: { type: 'string' },
      topic: { type: 'string', description: 'the topic filter, `$share/<group>/<filter>` for a shared subscription' },
      qos: { type: 'integer', minimum: 0, maximum: 2 },
    },
  },
  PublishRequest: {
    type: 'object',
    required: ['topic'],
    additionalProperties: false,
    properties: {
      topic: { type: 'string', minLength: 1, maxLength: 65_535, description: 'a topic name: no + or #, not $SYS' },
      payload: { type: 'string', default: '', description: 'the payload, as text or base64 (encoding)' },
      encoding: { type: 'string', enum: ['plain', 'base64'], default: 'plain' },
      qos: { type: 'integer', enum: [0, 1, 2], default: 0 },
      retain: { type: 'boolean', default: false },
      properties: ref('PublishProperties'),
    },
  },
  PublishProperties: {
    type: 'object',
    additionalProperties: false,
    description: 'MQTT 5.0 publish properties (§3.3.2.3); 3.1.1 subscribers get the message without them',
    properties: {
      payloadFormatIndicator: { type: 'boolean', description: 'true: the payload is UTF-8 text' },
      messageExpiryInterval: { type: 'integer', minimum: 1, maximum: 4_294_967_295, description: 'seconds' },
      contentType: { type: 'string', maxLength: 65_535 },
      responseTopic: { type: 'string', minLength: 1, maxLength: 65_535 },
      correlationData: { type: 'string', maxLength: 65_535, description: 'base64' },
      userProperties: { type: 'object', additionalProperties: { type: 'string', maxLength: 65_535 }, maxProperties: 100 },
    },
  },
  PublishResult: {
    type: 'object',
    required: ['topic', 'qos', 'retain', 'bytes'],
    properties: { topic: { type: 'string' }, qos: { type: 'integer' }, retain: { type: 'boolean' }, bytes: { type: 'integer', description: 'payload size' } },
  },
  Retained: {
    type: 'object',
    required: ['topic', 'payload', 'encoding', 'qos', 'bytes'],
    properties: {
      topic: { type: 'string' },
      payload: { type: 'string' },
      encoding: { type: 'string', enum: ['plain', 'base64'], description: 'plain when the payload is valid UTF-8' },
      qos: { type: 'integer' },
      bytes: { type: 'integer' },
    },
  },
  User: {
    type: 'object',
    required: ['username', 'roles', 'created'],
    properties: { username: { type: 'string' }, roles: { type: 'array', items: { type: 'string', enum: ['admin'] } }, created: { type: 'string' } },
  },
  UserCreate: {
    type: 'object',
    required: ['username', 'password'],
    additionalProperties: false,
    properties: {
      username: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[^:+#/\\s\\x00-\\x1f\\x7f-\\x9f]+$' },
      password: { type: 'string', minLength: 8, maxLength: 1024 },
      admin: { type: 'boolean', default: false },
    },
  },
  UserUpdate: {
    type: 'object',
    additionalProperties: false,
    minProperties: 1,
    properties: { password: { type: 'string', minLength: 8, maxLength: 1024 }, admin: { type: 'boolean' } },
  },
  Acl: {
    type: 'object',
    required: ['default', 'rules'],
    additionalProperties: false,
    properties: { default: { type: 'string', enum: ['allow', 'deny'] }, rules: { type: 'array', items: ref('AclRule'), maxItems: 10_000 } },
  },
  AclRule: {
    type: 'object',
    required: ['action', 'topics'],
    additionalProperties: false,
    properties: {
      action: { type: 'string', enum: ['allow', 'deny'] },
      permission: { type: 'string', enum: ['publish', 'subscribe', 'all'], default: 'all' },
      users: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
      clientIds: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
      addresses: { type: 'array', items: { type: 'string', pattern: ADDRESS }, minItems: 1, description: 'IPv4/IPv6 addresses or CIDR blocks' },
      topics: { type: 'array', items: { type: 'string', minLength: 1, pattern: TOPIC_FILTER }, minItems: 1, description: 'topic filters; %u is the username, %c the client id' },
    },
  },
  AclView: {
    type: 'object',
    required: ['default', 'rules', 'where', 'editable'],
    properties: {
      default: { type: 'string', enum: ['allow', 'deny'] },
      rules: { type: 'array', items: ref('AclRule') },
      where: { type: 'string' },
      editable: { type: 'boolean', description: 'false on a standalone node: its ACL is its config file\'s' },
    },
  },
  Ban: {
    type: 'object',
    required: ['kind', 'value', 'reason', 'until', 'created', 'by'],
    properties: {
      kind: { type: 'string', enum: ['clientid', 'username', 'address'] },
      value: { type: 'string' },
      reason: { type: ['string', 'null'] },
      until: { type: ['string', 'null'], format: 'date-time', description: 'null: until removed' },
      created: { type: 'string', format: 'date-time' },
      by: { type: 'string' },
    },
  },
  BanCreate: {
    type: 'object',
    required: ['kind', 'value'],
    additionalProperties: false,
    properties: {
      kind: { type: 'string', enum: ['clientid', 'username', 'address'] },
      value: { type: 'string', minLength: 1, maxLength: 65_535, description: 'an address may be a CIDR block (10.0.0.0/8)' },
      reason: { type: 'string', maxLength: 1024 },
      duration: { type: 'integer', minimum: 1, maximum: 315_360_000, description: 'seconds until it expires; without it the ban lasts until removed' },
    },
  },
  BanResult: {
    type: 'object',
    required: ['ban', 'kicked'],
    properties: { ban: ref('Ban'), kicked: { type: 'array', items: { type: 'string' }, description: 'client ids disconnected because of it' } },
  },
  ApiKey: {
    type: 'object',
    required: ['name', 'role', 'prefix', 'created'],
    properties: {
      name: { type: 'string' },
      role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
      prefix: { type: 'string', description: 'the key\'s first characters' },
      created: { type: 'string', format: 'date-time' },
    },
  },
  ApiKeyCreate: {
    type: 'object',
    required: ['name', 'role'],
    additionalProperties: false,
    properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }, role: { type: 'string', enum: ['viewer', 'operator', 'admin'] } },
  },
  ApiKeyCreated: {
    type: 'object',
    required: ['name', 'role', 'prefix', 'created', 'key'],
    properties: {
      name: { type: 'string' },
      role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
      prefix: { type: 'string' },
      created: { type: 'string', format: 'date-time' },
      key: { type: 'string', description: 'the key: shown this once, stored only as a hash' },
    },
  },
  Whoami: {
    type: 'object',
    required: ['username', 'roles', 'kind', 'name', 'role'],
    properties: {
      username: { type: ['string', 'null'], description: 'the admin user of a Basic request, null otherwise' },
      roles: { type: 'array', items: { type: 'string', enum: ['admin'] } },
      kind: { type: 'string', enum: ['user', 'token', 'apikey', 'cluster'] },
      name: { type: 'string', description: 'the user, the API key\'s name, or the management token' },
      role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
    },
  },
  Kicked: {
    type: 'object',
    required: ['clientid', 'node'],
    properties: { clientid: { type: 'string' }, node: { type: 'string', description: 'the node the client was connected to' } },
  },
}

const notFound = errorResponse('no such item')
const conflict = errorResponse('it exists already, or the node cannot change it')

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'FleetMQ management API',
    version: FLEETMQ_VERSION,
    description: 'Served by every node; answers for the whole cluster. Authenticate with HTTP Basic (an admin user) or `Authorization: Bearer` (an API key, or the node\'s management token). docs/api.md has examples.',
  },
  servers: [{ url: '/' }],
  security: [{ basic: [] }, { bearer: [] }],
  paths: {
    '/api/v1/whoami': {
      get: op({
        operationId: 'whoami',
        summary: 'who the credentials of this request are, and their role (what a client may show or offer)',
        'x-role': 'viewer',
        responses: { 200: ok('the caller', ref('Whoami')) },
      }),
    },
    '/api/v1/nodes': {
      get: op({
        operationId: 'listNodes',
        summary: 'the nodes of the cluster: health, version, uptime, connections, message rates, host CPU, memory and load',
        'x-role': 'viewer',
        parameters: [page, limit, query('status', 'only nodes in this health', { type: 'string', enum: ['up', 'down', 'left'] })],
        responses: { 200: ok('a page of nodes', pageOf('Node')) },
      }),
    },
    '/api/v1/clients': {
      get: op({
        operationId: 'listClients',
        summary: 'connected clients on every node, by client id',
        'x-role': 'viewer',
        parameters: [page, limit, query('clientid', 'this client id only'), query('username', 'this username only'), query('ip', 'this client address only'), query('node', 'clients of this node only')],
        responses: { 200: ok('a page of clients', pageOf('Client')) },
      }),
    },
    '/api/v1/clients/{clientid}': {
      get: op({
        operationId: 'getClient',
        summary: 'one connected client, wherever it is connected',
        'x-role': 'viewer',
        parameters: [clientIdParam],
        responses: { 200: ok('the client', ref('Client')), 404: notFound },
      }),
      delete: op({
        operationId: 'kickClient',
        summary: 'disconnect the client on the node that holds it (5.0: DISCONNECT 0x98 Administrative action); its session stays',
        'x-role': 'operator',
        parameters: [clientIdParam],
        responses: { 200: ok('the client was disconnected', ref('Kicked')), 404: notFound },
      }),
    },
    '/api/v1/clients/{clientid}/subscriptions': {
      get: op({
        operationId: 'listClientSubscriptions',
        summary: 'the subscriptions of one connected client',
        'x-role': 'viewer',
        parameters: [clientIdParam, page, limit],
        responses: { 200: ok('a page of subscriptions', pageOf('Subscription')), 404: notFound },
      }),
    },
    '/api/v1/subscriptions': {
      get: op({
        operationId: 'listSubscriptions',
        summary: 'subscriptions of the connected clients on every node',
        'x-role': 'viewer',
        parameters: [page, limit, query('topic', 'this topic filter only (exactly as subscribed)'), query('clientid', 'this client only')],
        responses: { 200: ok('a page of subscriptions', pageOf('Subscription')) },
      }),
    },
    '/api/v1/publish': {
      post: op({
        operationId: 'publish',
        summary: 'publish a message to the cluster, as a device would (the ACL does not apply: the caller is an operator)',
        'x-role': 'operator',
        requestBody: body('PublishRequest'),
        responses: { 200: ok('the message was routed (and stored, when retained)', ref('PublishResult')) },
      }),
    },
    '/api/v1/retained': {
      get: op({
        operationId: 'listRetained',
        summary: 'retained messages whose topic matches a filter',
        'x-role': 'viewer',
        parameters: [page, limit, query('topic', 'a topic filter (wildcards allowed); default #', { ...text, pattern: TOPIC_FILTER, default: '#' })],
        responses: { 200: ok('a page of retained messages, by topic', pageOf('Retained')) },
      }),
    },
    '/api/v1/retained/{topic}': {
      get: op({
        operationId: 'getRetained',
        summary: 'the retained message of one topic',
        'x-role': 'viewer',
        parameters: [topicParam],
        responses: { 200: ok('the retained message', ref('Retained')), 404: notFound },
      }),
      delete: op({
        operationId: 'deleteRetained',
        summary: 'delete the retained message of one topic (no message is sent to subscribers)',
        'x-role': 'operator',
        parameters: [topicParam],
        responses: { 204: { description: 'deleted' }, 404: notFound },
      }),
    },
    '/api/v1/users': {
      get: op({
        operationId: 'listUsers',
        summary: 'the users of the cluster\'s store (device and admin credentials)',
        'x-role': 'admin',
        parameters: [page, limit],
        responses: { 200: ok('a page of users', pageOf('User')) },
      }),
      post: op({
        operationId: 'createUser',
        summary: 'add a user; every node admits it within 2 s',
        'x-role': 'admin',
        requestBody: body('UserCreate'),
        responses: { 201: ok('the user', ref('User')), 409: conflict },
      }),
    },
    '/api/v1/users/{username}': {
      get: op({ operationId: 'getUser', summary: 'one user', 'x-role': 'admin', parameters: [usernameParam], responses: { 200: ok('the user', ref('User')), 404: notFound } }),
      patch: op({
        operationId: 'updateUser',
        summary: 'change a user\'s password or admin role; its sessions are closed',
        'x-role': 'admin',
        parameters: [usernameParam],
        requestBody: body('UserUpdate'),
        responses: { 200: ok('the user', ref('User')), 404: notFound },
      }),
      delete: op({
        operationId: 'deleteUser',
        summary: 'remove a user; its sessions are closed on every node',
        'x-role': 'admin',
        parameters: [usernameParam],
        responses: { 204: { description: 'removed' }, 404: notFound },
      }),
    },
    '/api/v1/acl': {
      get: op({ operationId: 'getAcl', summary: 'the ACL in force', 'x-role': 'admin', responses: { 200: ok('the ACL', ref('AclView')) } }),
      put: op({
        operationId: 'setAcl',
        summary: 'replace the cluster\'s ACL; every node applies it within 2 s',
        'x-role': 'admin',
        requestBody: body('Acl'),
        responses: { 200: ok('the ACL', ref('AclView')), 409: conflict },
      }),
    },
    '/api/v1/acl/rules': {
      post: op({
        operationId: 'addAclRule',
        summary: 'append a rule to the cluster\'s ACL (rules are checked in order, first match wins)',
        'x-role': 'admin',
        requestBody: body('AclRule'),
        responses: { 201: ok('the ACL', ref('AclView')), 409: conflict },
      }),
    },
    '/api/v1/acl/rules/{index}': {
      delete: op({
        operationId: 'deleteAclRule',
        summary: 'remove the rule at this position (from 0)',
        'x-role': 'admin',
        parameters: [pathParam('index', 'position of the rule, from 0', { type: 'integer', minimum: 0, maximum: 9999 })],
        responses: { 200: ok('the ACL', ref('AclView')), 404: notFound, 409: conflict },
      }),
    },
    '/api/v1/banned': {
      get: op({ operationId: 'listBans', summary: 'bans in force', 'x-role': 'viewer', parameters: [page, limit], responses: { 200: ok('a page of bans', pageOf('Ban')) } }),
      post: op({
        operationId: 'addBan',
        summary: 'ban a client id, username or address on every node: refused at CONNECT, and connected clients it matches are disconnected',
        'x-role': 'operator',
        requestBody: body('BanCreate'),
        responses: { 201: ok('the ban, in force on every node', ref('BanResult')), 409: conflict },
      }),
    },
    '/api/v1/banned/{kind}/{value}': {
      delete: op({
        operationId: 'removeBan',
        summary: 'lift a ban',
        'x-role': 'operator',
        parameters: [pathParam('kind', 'what is banned', { type: 'string', enum: ['clientid', 'username', 'address'] }), pathParam('value', 'the client id, username or address, percent-encoded')],
        responses: { 204: { description: 'lifted' }, 404: notFound },
      }),
    },
    '/api/v1/apikeys': {
      get: op({ operationId: 'listApiKeys', summary: 'API keys (never the keys themselves)', 'x-role': 'admin', parameters: [page, limit], responses: { 200: ok('a page of API keys', pageOf('ApiKey')) } }),
      post: op({
        operationId: 'createApiKey',
        summary: 'make an API key; the answer holds the key, shown this once',
        'x-role': 'admin',
        requestBody: body('ApiKeyCreate'),
        responses: { 201: ok('the key', ref('ApiKeyCreated')), 409: conflict },
      }),
    },
    '/api/v1/apikeys/{name}': {
      delete: op({
        operationId: 'deleteApiKey',
        summary: 'remove an API key; it stops working within a second on every node',
        'x-role': 'admin',
        parameters: [apiKeyNameParam],
        responses: { 204: { description: 'removed' }, 404: notFound },
      }),
    },
  },
  components: {
    securitySchemes: {
      basic: { type: 'http', scheme: 'basic', description: 'a user with the admin role' },
      bearer: { type: 'http', scheme: 'bearer', description: 'an API key (fleetmq apikey add), or the node\'s management token (<dataDir>/mgmt.token)' },
    },
    schemas: SCHEMAS,
  },
} as const

export type OpenApiDocument = typeof OPENAPI
