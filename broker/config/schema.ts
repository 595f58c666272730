import { z } from 'zod'
import { DEFAULTS, DEFAULT_PORTS } from './defaults.js'

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
  })

export const aclRuleSchema = z.strictObject({
  action: z.enum(['allow', 'deny']),
  /** What the rule governs. */
  permission: z.enum(['publish', 'subscribe', 'all']).default('all'),
  /** Usernames the rule applies to (absent = everyone). */
  users: z.array(z.string().min(1)).optional(),
  /** Client identifiers the rule applies to (absent = every client). */
  clientIds: z.array(z.string().min(1)).optional(),
  /** Client addresses (IPv4/IPv6, optionally CIDR) the rule applies to; the real address behind PROXY. */
  addresses: z.array(z.string().min(1)).optional(),
  /** Topic filters; `%u` is replaced by the username and `%c` by the client id. */
  topics: z.array(z.string().min(1)).min(1),
})

const limitsSchema = z.strictObject({
  maxConnections: count.default(DEFAULTS.limits.maxConnections),
  maxPacketSize: z.number().int().min(64).max(268_435_455).default(DEFAULTS.limits.maxPacketSize),
  maxInflight: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxInflight),
  maxQueued: count.default(DEFAULTS.limits.maxQueued),
  slowConsumerBytes: z.number().int().min(1_024).default(DEFAULTS.limits.slowConsumerBytes),
  stuckConsumerBytes: z.number().int().min(1_024).default(DEFAULTS.limits.stuckConsumerBytes),
  maxTopicLevels: z.number().int().min(1).max(100).default(DEFAULTS.limits.maxTopicLevels),
  maxTopicLength: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxTopicLength),
  minKeepAlive: z.number().int().min(0).max(65_535).default(DEFAULTS.limits.minKeepAlive),
  maxKeepAlive: z.number().int().min(1).max(65_535).default(DEFAULTS.limits.maxKeepAlive),
  topicAliasMaximum: z.number().int().min(0).max(65_535).default(DEFAULTS.limits.topicAliasMaximum),
  maxSessionExpiry: z.number().int().min(0).max(4_294_967_295).default(DEFAULTS.limits.maxSessionExpiry),
  maxClientIdLength: z.number().int().min(23).max(65_535).default(DEFAULTS.limits.maxClientIdLength),
  connectTimeout: z.number().int().min(1).default(DEFAULTS.limits.connectTimeout),
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
      })
      .prefault({}),
    limits: limitsSchema.prefault({}),
    acl: z
      .strictObject({
        /** What happens when no rule matches an authenticated client. */
        default: z.enum(['allow', 'deny']).default('allow'),
        rules: z.array(aclRuleSchema).default([]),
      })
      .prefault({}),
    sharedSubscriptions: z
      .strictObject({
        strategy: z.enum(['round_robin', 'random', 'sticky', 'hash_clientid']).default('round_robin'),
      })
      .prefault({}),
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
    if (config.limits.slowConsumerBytes > config.limits.stuckConsumerBytes) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'slowConsumerBytes'],
        message: `must not exceed limits.stuckConsumerBytes (${config.limits.stuckConsumerBytes})`,
      })
    }
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
