import { isIP } from 'node:net'
import { z } from 'zod'
import { DEFAULTS, DEFAULT_PORTS } from './defaults.js'
import { compileRule, RuleSyntaxError } from '../rules/rule.js'
import { templateProblem } from '../rules/template.js'

/*
 * The configuration contract. The broker validates it once at start and freezes the result;
 * provisioning renders the same keys into an env file (see `env.ts`), so this file is the one
 * source of truth for every setting a node has.
 *
 * Nested objects use `.prefault({})` so that an absent section still receives its inner defaults.
 */

const port = z.number().int().min(0).max(65_535)
const count = z.number().int().min(0)

export const tlsSchema = z.strictObject({
  /** PEM certificate chain file. */
  cert: z.string().min(1),
  /** PEM private key file. */
  key: z.string().min(1),
  /** PEM CA bundle used to verify client certificates. */
  ca: z.string().min(1).optional(),
  /** Ask clients for a certificate (verified against `ca`). */
  requestClientCert: z.boolean().default(false),
  /** Refuse clients without a valid certificate. Implies `requestClientCert`. */
  requireClientCert: z.boolean().default(false),
  /** Use the client certificate's CN as the MQTT username (authenticated by the certificate). */
  useCnAsUsername: z.boolean().default(false),
  /** Lowest TLS version accepted; never below 1.2. */
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
})

export const LISTENER_TYPES = ['mqtt', 'mqtts', 'ws', 'wss'] as const
export type ListenerType = (typeof LISTENER_TYPES)[number]

export const listenerSchema = z
  .strictObject({
    /** A name for logs and metrics; defaults to `<type>:<port>`. */
    name: z.string().min(1).optional(),
    type: z.enum(LISTENER_TYPES),
    host: z.string().min(1).default(DEFAULTS.host),
    /** Defaults to the field's habit for the type: 1883, 8883, 8083, 8084. 0 picks a free port. */
    port: port.optional(),
    /**
     * PROXY protocol v1/v2 in front of MQTT: `off` (a header is a protocol error), `optional`
     * (accepted when present), `required` (connections without one are refused).
     */
    proxyProtocol: z.enum(['off', 'optional', 'required']).default('off'),
    tls: tlsSchema.optional(),
    /** HTTP path of the WebSocket endpoint (ws, wss). */
    path: z.string().startsWith('/').default(DEFAULTS.wsPath),
    /** Connections on this listener (0 = only the node-wide limit applies). */
    maxConnections: count.default(0),
    /** New connections per second on this listener (0 = unlimited). */
    connectRate: count.default(DEFAULTS.connectRate),
  })
  .superRefine((listener, ctx) => {
    const secure = listener.type === 'mqtts' || listener.type === 'wss'
    if (secure && !listener.tls) {
      ctx.addIssue({
        code: 'custom',
        path: ['tls'],
        message: `a ${listener.type} listener needs tls.cert and tls.key (PEM files)`,
      })
    }
    if (!secure && listener.tls) {
      ctx.addIssue({
        code: 'custom',
        path: ['tls'],
        message: `tls is only used by mqtts and wss listeners; use type ${listener.type === 'ws' ? 'wss' : 'mqtts'} or remove tls`,
      })
    }
    const tls = listener.tls
    if (tls && (tls.requestClientCert || tls.requireClientCert) && !tls.ca) {
      // Without a CA, Node would verify client certificates against the public web roots.
      ctx.addIssue({ code: 'custom', path: ['tls', 'ca'], message: 'client certificates need tls.ca: the PEM CA that signs them' })
    }
    if (tls?.useCnAsUsername && !tls.requestClientCert && !tls.requireClientCert) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'useCnAsUsername'], message: 'needs tls.requireClientCert (or requestClientCert): no certificate, no CN' })
    }
  })

/** `192.0.2.7`, `10.0.0.0/8`, `fd00::/8`. */
const addressOrCidr = z.string().refine((entry) => {
  const [ip, bits, ...rest] = entry.split('/')
  const family = isIP(ip)
  if (!family || rest.length) return false
  return bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
}, { message: 'expected an IPv4 or IPv6 address, optionally with a /prefix (10.0.0.0/8, fd00::/8, 192.0.2.7)' })

/** [MQTT-4.7.1-1] '#' only as the last whole level, [MQTT-4.7.1-2] '+' only as a whole level. */
const topicFilter = z.string().min(1).refine(
  (filter) => filter.split('/').every((level, i, all) => (level === '#' ? i === all.length - 1 : level === '+' || !/[#+]/.test(level))),
  { message: "expected a topic filter: '+' and '#' only as whole levels, '#' only last (sensors/%u/#)" },
)

export const aclRuleSchema = z.strictObject({
  action: z.enum(['allow', 'deny']),
  /** What the rule governs. */
  permission: z.enum(['publish', 'subscribe', 'all']).default('all'),
  /** Usernames the rule applies to (absent = everyone). */
  users: z.array(z.string().min(1)).optional(),
  /** Client identifiers the rule applies to (absent = every client). */
  clientIds: z.array(z.string().min(1)).optional(),
  /** Client addresses (IPv4/IPv6, optionally CIDR) the rule applies to; the real address behind PROXY. */
  addresses: z.array(addressOrCidr).optional(),
  /** Topic filters; `%u` is replaced by the username and `%c` by the client id. */
  topics: z.array(topicFilter).min(1),
})

/** The `acl` section; on a clustered node the same object is the cluster's ACL, in its Redis. */
export const aclSettingsSchema = z.strictObject({
  /**
   * What happens when neither a configured rule nor a built-in one (docs/auth.md: admins, devices'
   * own `devices/%c/#` and `users/%u/#`) matches. Deny: a device credential must not read `#`.
   */
  default: z.enum(['allow', 'deny']).default('deny'),
  rules: z.array(aclRuleSchema).default([]),
})

const limitsSchema = z.strictObject({
  maxConnections: count.default(DEFAULTS.limits.maxConnections),
  maxPacketSize: z.number().int().min(64).max(268_435_455).default(DEFAULTS.limits.maxPacketSize),
  maxInflight: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxInflight),
  receiveMaximum: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.receiveMaximum),
  maxQueued: count.default(DEFAULTS.limits.maxQueued),
  slowConsumerBytes: z.number().int().min(1_024).default(DEFAULTS.limits.slowConsumerBytes),
  stuckConsumerBytes: z.number().int().min(1_024).default(DEFAULTS.limits.stuckConsumerBytes),
  maxTopicLevels: z.number().int().min(1).max(100).default(DEFAULTS.limits.maxTopicLevels),
  maxTopicLength: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxTopicLength),
  minKeepAlive: z.number().int().min(0).max(65_535).default(DEFAULTS.limits.minKeepAlive),
  maxKeepAlive: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxKeepAlive),
  serverKeepAlive: z.number().int().min(0).max(65_535).default(DEFAULTS.limits.serverKeepAlive),
  refuseKeepAliveZero: z.boolean().default(DEFAULTS.limits.refuseKeepAliveZero),
  topicAliasMaximum: z.number().int().min(0).max(65_535).default(DEFAULTS.limits.topicAliasMaximum),
  maxSessionExpiry: z.number().int().min(0).max(4_294_967_295).default(DEFAULTS.limits.maxSessionExpiry),
  maxClientIdLength: z.number().int().min(23).max(65_535).default(DEFAULTS.limits.maxClientIdLength),
  connectRatePerAddress: count.default(DEFAULTS.limits.connectRatePerAddress),
  loginFailuresBeforeBackoff: count.default(DEFAULTS.limits.loginFailuresBeforeBackoff),
  maxLoginBackoff: z.number().int().min(1).max(86_400).default(DEFAULTS.limits.maxLoginBackoff),
  rateExemptAddresses: z.array(addressOrCidr).default([...DEFAULTS.limits.rateExemptAddresses]),
  connectTimeout: z.number().int().min(1).default(DEFAULTS.limits.connectTimeout),
})

const hostPort = z.string().regex(/^(?:\[[^\]]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT')

export const clusterRedisSchema = z
  .strictObject({
    /** `redis://[user:pass@]host:port[/db]` or `rediss://…` (TLS). Exclusive with `sentinels`. */
    url: z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL').optional(),
    /** Sentinel addresses (`host:port`); the node asks them for the current primary. */
    sentinels: z.array(hostPort).min(1).optional(),
    /** The primary's name as the sentinels know it (`sentinel monitor NAME …`). */
    name: z.string().min(1).optional(),
    /** Redis ACL user (AUTH username). */
    username: z.string().min(1).optional(),
    /** File holding the Redis password (AUTH); never the password itself in the config. */
    passwordFile: z.string().min(1).optional(),
    /** File holding the password of the sentinels, when they require one. */
    sentinelPasswordFile: z.string().min(1).optional(),
    /**
     * TLS to Redis and to the sentinels (implied by rediss://). Colocated Redis under provisioning
     * speaks TLS only, with certificates of the cluster CA (docs/security.md).
     */
    tls: z
      .strictObject({
        /** PEM CA bundle that signed the Redis (and sentinel) certificates; the certificates are verified against it. */
        caFile: z.string().min(1).optional(),
        /** PEM client certificate, for a Redis with `tls-auth-clients yes`; with `keyFile`. */
        certFile: z.string().min(1).optional(),
        /** PEM private key of `certFile`. */
        keyFile: z.string().min(1).optional(),
        /**
         * Name the Redis certificates must carry (SNI and the check), when it is not the address
         * connected to (sentinels name primaries by IP address).
         */
        serverName: z.string().min(1).optional(),
      })
      .refine((tls) => !tls.certFile === !tls.keyFile, { message: 'certFile and keyFile go together: give both (a client certificate) or neither' })
      .optional(),
    /**
     * Replicas that must hold a QoS 1/2 message, a retained message or a subscription before the
     * client is acknowledged (Redis `WAIT`): default 1 with `sentinels` (a failover keeps every
     * acknowledged message), 0 with `url` (no replica to wait for).
     */
    waitReplicas: z.number().int().min(0).max(16).optional(),
    /** Milliseconds to wait for them; a write not replicated by then is not acknowledged. */
    waitTimeout: z.number().int().min(10).max(60_000).default(DEFAULTS.cluster.redisWaitTimeout),
  })
  .superRefine((redis, ctx) => {
    if (!redis.url === !redis.sentinels) {
      ctx.addIssue({ code: 'custom', message: 'give either url (one Redis) or sentinels plus name (Redis Sentinel), not both or neither' })
    }
    if (redis.sentinels && !redis.name) {
      ctx.addIssue({ code: 'custom', path: ['name'], message: 'sentinels need the primary name (the NAME of `sentinel monitor NAME`)' })
    }
  })

export const clusterSchema = z.strictObject({
  /** A node refuses to join a cluster of another name. */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, _ . - (at most 63)').default(DEFAULTS.cluster.name),
  /** File holding the cluster secret (≥ 32 bytes) that authenticates nodes to each other's management API. */
  secretFile: z.string().min(1).optional(),
  /** Shared state and fan-out. Absent: a standalone node with its state in memory. */
  redis: clusterRedisSchema.optional(),
  /** This node's id in the cluster; defaults to a random id per start. */
  nodeId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (at most 64)').optional(),
  /** Management address other nodes and operators reach this node at (HOST:PORT); defaults to the bound one. */
  advertiseMgmt: hostPort.optional(),
  /** MQTT addresses clients reach this node at (HOST:PORT); default to the bound ones. */
  advertiseMqtt: z.array(hostPort).optional(),
  /** Seconds between membership heartbeats. */
  heartbeatInterval: z.number().int().min(1).max(60).default(DEFAULTS.cluster.heartbeatInterval),
  /** Seconds without a heartbeat after which a node is reported down. */
  downAfter: z.number().int().min(2).max(600).default(DEFAULTS.cluster.downAfter),
  /** Cluster management requests per second per remote address. */
  mgmtRate: z.number().min(0.1).default(DEFAULTS.cluster.mgmtRate),
  /** Burst of cluster management requests per remote address. */
  mgmtBurst: z.number().int().min(1).default(DEFAULTS.cluster.mgmtBurst),
  /** Messages sent to Redis and not yet acknowledged; beyond: QoS 0 dropped, QoS 1/2 publishers wait. */
  overloadPendingPublishes: z.number().int().min(1).default(DEFAULTS.cluster.overloadPendingPublishes),
  /** Bytes buffered for this node's subscribers; beyond: QoS 0 from other nodes dropped. */
  overloadBufferedBytes: z.number().int().min(1024).default(DEFAULTS.cluster.overloadBufferedBytes),
  /** QoS 1/2 messages waiting for this node's subscribers; beyond: publishers held cluster-wide. */
  overloadQueuedMessages: z.number().int().min(100).default(DEFAULTS.cluster.overloadQueuedMessages),
  /** Seconds of holding before QoS 0 messages are dropped instead. */
  overloadDropQos0After: z.number().min(0).default(DEFAULTS.cluster.overloadDropQos0After),
  /** Resident memory bound of this node, bytes; beyond: publishers held cluster-wide, logged, counted. */
  maxMemory: z.number().int().min(64 * 1024 * 1024).default(DEFAULTS.cluster.maxMemory),
})

/** An action template (`alerts/${clientid}`): placeholders name fields of the rule's output. */
const template = z.string().min(1).superRefine((text, ctx) => {
  const problem = templateProblem(text)
  if (problem) ctx.addIssue({ code: 'custom', message: `${problem}; write \${field} with a field of the rule's SELECT` })
})

/** Bounds of an action's buffer and its retries (broker/rules/queue.ts). */
const actionBuffer = {
  /** Messages waiting for the sink in memory; past it they wait in the spill log only (or, with maxDiskBytes 0, the oldest is dropped and counted). */
  maxQueued: z.number().int().min(1).default(DEFAULTS.rules.maxQueued),
  /** Bytes of the action's spill log (`<dataDir>/actions/<rule>.<n>/`); past it the oldest segment is dropped and counted. 0: memory only. */
  maxDiskBytes: z.number().int().min(0).default(DEFAULTS.rules.maxDiskBytes).refine((n) => n === 0 || n >= 64 * 1024, { message: 'maxDiskBytes must be 0 (memory only) or at least 65536' }),
  /** fdatasync the spill log before a QoS 1/2 PUBACK (grouped); false: written, not synced (a kill -9 loses nothing, a power loss may). */
  fsync: z.boolean().default(DEFAULTS.rules.fsync),
  /** Messages per send to the sink. */
  maxBatch: z.number().int().min(1).max(100_000).default(DEFAULTS.rules.maxBatch),
  /** First retry delay after a failed send, ms; doubles per failure up to maxBackoff. */
  initialBackoff: z.number().int().min(1).default(DEFAULTS.rules.initialBackoff),
  /** Longest retry delay, ms. */
  maxBackoff: z.number().int().min(1).default(DEFAULTS.rules.maxBackoff),
}

export const republishActionSchema = z.strictObject({
  type: z.literal('republish'),
  /** Topic template (`alerts/${clientid}`). */
  topic: template,
  qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(0),
  retain: z.boolean().default(false),
  /** Payload template; default the rule's output as JSON. */
  payload: template.optional(),
  ...actionBuffer,
})

export const kafkaActionSchema = z.strictObject({
  type: z.literal('kafka'),
  /** Name of a `connectors` entry of type kafka. */
  connector: z.string().min(1),
  /** Kafka topic (a template). */
  topic: template,
  /** Record key template: records with one key go to one partition, in order. Absent: no key. */
  key: template.optional(),
  /** Record value template; default the rule's output as JSON. */
  payload: template.optional(),
  /** Record headers, each value a template. */
  headers: z.record(z.string().min(1), template).default({}),
  ...actionBuffer,
})

export const ruleActionSchema = z.discriminatedUnion('type', [republishActionSchema, kafkaActionSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? 'type must be republish or kafka' : undefined),
})

export const ruleSchema = z.strictObject({
  /** Names the rule in logs and metrics (`fleetmq_rule_matched_total{rule="…"}`). */
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'letters, digits, _ . - (at most 64)'),
  /** `SELECT … FROM "topic/filter" [WHERE …]` (docs/rules.md). */
  sql: z.string().superRefine((sql, ctx) => {
    try {
      compileRule(sql)
    } catch (err) {
      if (!(err instanceof RuleSyntaxError)) throw err
      ctx.addIssue({ code: 'custom', message: `${err.message} (docs/rules.md has the syntax; try it with fleetmq rule test --sql)` })
    }
  }),
  enabled: z.boolean().default(true),
  actions: z.array(ruleActionSchema).min(1, 'a rule needs at least one action (republish or kafka)'),
})

const saslSchema = z.strictObject({
  mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
  username: z.string().min(1),
  /** File holding the password; never the password itself in the config. */
  passwordFile: z.string().min(1),
})

export const kafkaConnectorSchema = z
  .strictObject({
    type: z.literal('kafka'),
    /** Bootstrap servers, HOST:PORT. */
    bootstrap: z.array(hostPort).min(1),
    clientId: z.string().min(1).default('fleetmq'),
    /** all: every in-sync replica (-1); leader: the leader only (1); none: no acknowledgement (0). */
    acks: z.enum(['all', 'leader', 'none']).default('all'),
    /** Idempotent producer: a retried batch is written once per partition. Needs acks all. */
    idempotent: z.boolean().default(true),
    compression: z.enum(['none', 'gzip']).default('none'),
    /** TLS to the brokers: true for the system's CAs, or PEM files. */
    tls: z.union([z.boolean(), z.strictObject({
      caFile: z.string().min(1).optional(),
      certFile: z.string().min(1).optional(),
      keyFile: z.string().min(1).optional(),
      servername: z.string().min(1).optional(),
    })]).default(false),
    sasl: saslSchema.optional(),
    /** Milliseconds to connect to a broker. */
    connectTimeout: z.number().int().min(100).default(DEFAULTS.rules.kafkaConnectTimeout),
    /** Milliseconds a produce request may take. */
    requestTimeout: z.number().int().min(100).default(DEFAULTS.rules.kafkaRequestTimeout),
  })
  .superRefine((connector, ctx) => {
    if (connector.idempotent && connector.acks !== 'all') {
      ctx.addIssue({ code: 'custom', path: ['idempotent'], message: 'an idempotent producer needs acks: all; set acks: all or idempotent: false' })
    }
  })

export const connectorSchema = z.discriminatedUnion('type', [kafkaConnectorSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? 'type must be kafka (RabbitMQ, SQL, HTTP and MQTT bridge connectors are not built yet)' : undefined),
})

export const configSchema = z
  .strictObject({
    /** Accept clients without credentials. Development only: a warning is logged at every start. */
    allowAnonymous: z.boolean().default(false),
    dataDir: z.string().min(1).default(DEFAULTS.dataDir),
    /** The user store; defaults to `<dataDir>/users.json`. */
    usersFile: z.string().min(1).optional(),
    listeners: z
      .array(listenerSchema)
      .min(1)
      .prefault([{ type: 'mqtt' }]),
    mgmt: z
      .strictObject({
        enabled: z.boolean().default(true),
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(DEFAULT_PORTS.mgmt),
        /**
         * Host names requests may carry in Host besides IP addresses, `localhost` and the machine's
         * own name (e.g. a DNS name nodes join with); any other is refused (DNS rebinding).
         */
        allowedHosts: z.array(z.string().min(1).regex(/^[A-Za-z0-9.-]+$/, 'a host name (letters, digits, dots, hyphens), without a port')).default([]),
        /**
         * Serve the API over HTTPS with this certificate and key (PEM files). `ca` is the cluster
         * CA: this node verifies its seed's API against it when it joins, and `fleetmq cluster …`
         * on the host verifies this node's. A node with `tls` calls other nodes over https.
         */
        tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1), ca: z.string().min(1).optional() }).optional(),
      })
      .prefault({}),
    limits: limitsSchema.prefault({}),
    acl: aclSettingsSchema.prefault({}),
    sharedSubscriptions: z
      .strictObject({
        strategy: z.enum(['round_robin', 'random', 'sticky', 'hash_clientid']).default('round_robin'),
      })
      .prefault({}),
    /** Cluster membership and the Redis backend (see docs/cluster.md). */
    cluster: clusterSchema.prefault({}),
    /** Shared connections to external systems, by name; rules' actions refer to them (docs/rules.md). */
    connectors: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'letters, digits, _ . - (at most 64)'), connectorSchema).default({}),
    /** Rules run on the messages this node receives from its clients (docs/rules.md). */
    rules: z.array(ruleSchema).default([]),
    /** Server Reference sent to 5.0 clients with Use Another Server / Server Moved. */
    serverReference: z.string().min(1).optional(),
    /** Seconds between `$SYS` statistics publications. */
    sysInterval: z.number().int().min(1).default(10),
    shutdownTimeout: z.number().int().min(1).default(DEFAULTS.shutdownTimeout),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** `auto`: human-readable on a terminal, JSON otherwise. */
        format: z.enum(['auto', 'json', 'pretty']).default('auto'),
      })
      .prefault({}),
  })
  .superRefine((config, ctx) => {
    if (config.limits.minKeepAlive > config.limits.maxKeepAlive) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'minKeepAlive'],
        message: `must not exceed limits.maxKeepAlive (${config.limits.maxKeepAlive})`,
      })
    }
    const { serverKeepAlive, minKeepAlive, maxKeepAlive } = config.limits
    if (serverKeepAlive > 0 && (serverKeepAlive < minKeepAlive || serverKeepAlive > maxKeepAlive)) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'serverKeepAlive'],
        message: `must be 0 (none) or between limits.minKeepAlive (${minKeepAlive}) and limits.maxKeepAlive (${maxKeepAlive})`,
      })
    }
    if (config.limits.slowConsumerBytes > config.limits.stuckConsumerBytes) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'slowConsumerBytes'],
        message: `must not exceed limits.stuckConsumerBytes (${config.limits.stuckConsumerBytes})`,
      })
    }
    const ruleIds = new Map<string, number>()
    config.rules.forEach((rule, index) => {
      if (ruleIds.has(rule.id)) {
        ctx.addIssue({ code: 'custom', path: ['rules', index, 'id'], message: `"${rule.id}" is already the id of rules[${ruleIds.get(rule.id)}]; give each rule its own id` })
      }
      ruleIds.set(rule.id, index)
      rule.actions.forEach((action, a) => {
        if (action.type !== 'kafka') return
        const connector = config.connectors[action.connector]
        if (!connector) {
          const known = Object.keys(config.connectors)
          ctx.addIssue({
            code: 'custom',
            path: ['rules', index, 'actions', a, 'connector'],
            message: `no connector named "${action.connector}"; ${known.length ? `use one of ${known.join(', ')}` : 'add it under connectors (type: kafka, bootstrap: [HOST:PORT])'}`,
          })
        }
      })
    })
    const seen = new Map<string, number>()
    config.listeners.forEach((listener, index) => {
      const key = `${listener.host}:${listener.port ?? DEFAULT_PORTS[listener.type]}`
      if (listener.port !== 0 && seen.has(key)) {
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', index, 'port'],
          message: `${key} is already used by listeners[${seen.get(key)}]; give each listener its own port`,
        })
      }
      seen.set(key, index)
    })
  })

export type ConfigInput = z.input<typeof configSchema>
export type Config = z.output<typeof configSchema>
export type ListenerConfig = z.output<typeof listenerSchema>
export type TlsConfig = z.output<typeof tlsSchema>
export type AclRule = z.output<typeof aclRuleSchema>
export type AclSettings = z.output<typeof aclSettingsSchema>
export type ClusterConfig = z.output<typeof clusterSchema>
export type RuleConfig = z.output<typeof ruleSchema>
export type RuleActionConfig = z.output<typeof ruleActionSchema>
export type KafkaActionConfig = z.output<typeof kafkaActionSchema>
export type RepublishActionConfig = z.output<typeof republishActionSchema>
export type KafkaConnectorConfig = z.output<typeof kafkaConnectorSchema>
