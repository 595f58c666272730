import type { Client } from 'aedes'
import type { AclSettings, Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { compileRules, decide, sharedSubscriptionFilter, type AclSubject, type CompiledRule } from './acl-rules.js'
import { clientAddress, clientIdentity } from './identity.js'

/*
 * Publish and subscribe authorization from `acl.rules` (see `acl-rules.ts` for the matching).
 * Runs after `auth`, whose identity (username, roles) it reads.
 *
 * A denied PUBLISH:
 * - MQTT 5.0: aedes answers QoS 1 with PUBACK 0x87 and QoS 2 with PUBREC 0x87 (Not authorized),
 *   keeps the connection and drops the message; a QoS 0 message is dropped silently.
 * - MQTT 3.1.1 / 3.1: the protocol has no way to say "not authorized" to a publisher, so a
 *   server "MUST either make a positive acknowledgement … or close the Network Connection"
 *   [MQTT-3.3.5-2]. FleetMQ closes the connection (aedes' behaviour): a positive acknowledgement
 *   would tell a device its data were delivered when they were thrown away.
 * A denied SUBSCRIBE is answered in SUBACK with 0x80 (3.1.1, §3.9.3) or 0x87 Not authorized
 * (5.0) for that filter; the other filters of the same SUBSCRIBE are granted on their own merits.
 */

/** Topics whose publish verdict is kept per client. */
const MAX_CACHED_TOPICS = 256

/** Denials since start, for metrics. */
export const aclStats = { publishDenied: 0, subscribeDenied: 0 }

/** Where a clustered node's ACL lives: the cluster's Redis (cluster-users.ts). */
export interface AclSource {
  readAcl(): Promise<AclSettings | undefined>
  seedAcl(acl: AclSettings): Promise<boolean>
  onAclChange(listener: () => void): void
}

function compile(acl: AclSettings, where: string): CompiledRule[] {
  try {
    return compileRules(acl.rules)
  } catch (err) {
    throw new FleetmqError('CONFIG_INVALID', `the ACL (${where}) is invalid: ${(err as Error).message}`)
  }
}

export interface AclFeature extends Feature {
  /** A clustered node: takes the cluster's ACL (storing this node's when the cluster has none) and follows its changes. */
  start(): Promise<void>
}

/**
 * @param source on a clustered node, the cluster's ACL: it replaces the config's `acl` section, on
 *   every node at once; the first node of a cluster that has none stores its own.
 */
export function aclFeature(config: Config, log: Logger, source?: AclSource): AclFeature {
  let rules = compile(config.acl, 'acl in the config')
  /** `acl.default: allow` opens every topic to every device credential: said at start and at each change. */
  const warnIfOpen = (acl: AclSettings, where: string): void => {
    if (acl.default !== 'allow') return
    log.warn({ code: 'FLEETMQ_ERR_ACL_OPEN', where }, `ACL (${where}): default allow: any authenticated client may publish and subscribe to every topic no rule names (all but $SYS); set acl default: deny (docs/auth.md)`)
  }
  let fallback = config.acl.default

  // A client's identity and address do not change while it is connected: made once, at its first check.
  const subjects = new WeakMap<Client, AclSubject>()
  const subjectOf = (client: Client): AclSubject => {
    let subject = subjects.get(client)
    if (subject) return subject
    const identity = clientIdentity(client)
    subject = {
      username: identity?.username,
      clientId: client.id,
      address: clientAddress(client),
      admin: identity?.roles.includes('admin') ?? false,
      anonymous: identity?.method === 'anonymous',
    }
    // Not kept before authentication established who it is (nothing should ask then; if it did, the answer would last).
    if (identity) subjects.set(client, subject)
    return subject
  }
  const maySubscribe = (client: Client, topic: string): boolean => {
    const subject = subjectOf(client)
    const verdict = decide(rules, fallback, subject, 'subscribe', topic)
    if (!verdict.allowed) {
      aclStats.subscribeDenied++
      log.info({ clientId: client.id, username: subject.username, remoteAddress: subject.address, topic, rule: verdict.by }, `ACL: subscription to ${topic} denied by ${verdict.by}`)
    }
    return verdict.allowed
  }

  const denyPublish = (client: Client, topic: string, by: string): Error => {
    const subject = subjectOf(client)
    aclStats.publishDenied++
    // Publish denials are logged at debug: a device looping on a forbidden topic would otherwise
    // flood the log; the counter shows them.
    log.debug({ clientId: client.id, username: subject.username, remoteAddress: subject.address, topic, rule: by }, `ACL: publish to ${topic} denied by ${by}`)
    return new Error(`not authorized to publish to ${topic}`)
  }

  // Every PUBLISH is checked, so the common case costs no rule walk: with no rule about publishing
  // only the built-in rules apply, a few string comparisons; otherwise each client's verdicts are
  // kept per topic (its identity and address do not change while it is connected, nor do the rules).
  let publishRules = rules.filter((rule) => rule.publish)
  let verdicts = new WeakMap<Client, Map<string, string | null>>()
  /** New rules apply to every publish from now on and to new subscriptions; granted ones stay. */
  const apply = (acl: AclSettings): void => {
    rules = compile(acl, 'the cluster\'s')
    fallback = acl.default
    publishRules = rules.filter((rule) => rule.publish)
    verdicts = new WeakMap()
  }
  const follow = async (): Promise<void> => {
    const acl = await source?.readAcl()
    if (!acl) return
    apply(acl)
    log.info({ rules: acl.rules.length, default: acl.default }, `ACL: applied the cluster's (${acl.rules.length} rule${acl.rules.length === 1 ? '' : 's'}, default ${acl.default})`)
    warnIfOpen(acl, 'the cluster\'s')
  }
  const publishVerdict = (client: Client, topic: string): string | null => {
    if (publishRules.length === 0) {
      const verdict = decide(publishRules, fallback, subjectOf(client), 'publish', topic)
      return verdict.allowed ? null : verdict.by
    }
    let known = verdicts.get(client)
    const cached = known?.get(topic)
    if (cached !== undefined) return cached
    const verdict = decide(rules, fallback, subjectOf(client), 'publish', topic)
    const denial = verdict.allowed ? null : verdict.by
    if (known === undefined) verdicts.set(client, known = new Map())
    // Bounded: a client publishing to ever new topics (an id in the topic) recomputes instead.
    else if (known.size >= MAX_CACHED_TOPICS) known.clear()
    known.set(topic, denial)
    return denial
  }

  return {
    name: 'acl',
    async start() {
      if (!source) {
        warnIfOpen(config.acl, 'acl in the config')
        return
      }
      if (await source.seedAcl({ default: config.acl.default, rules: [...config.acl.rules] })) {
        log.info(`ACL: the cluster had none; this node's (acl in the config) is now the cluster's`)
      }
      const acl = await source.readAcl()
      if (acl && JSON.stringify(acl) !== JSON.stringify({ default: config.acl.default, rules: config.acl.rules })) {
        log.warn(`ACL: the cluster's applies, not the one in this node's config; change it with fleetmq acl set FILE (fleetmq acl show prints it)`)
      }
      if (acl) apply(acl)
      warnIfOpen(acl ?? config.acl, acl ? 'the cluster\'s' : 'acl in the config')
      source.onAclChange(() => {
        follow().catch((err: Error) => log.error({ err }, `ACL: could not apply the cluster's, keeping the rules before: ${err.message}`))
      })
    },
    authorizePublish(client, packet) {
      // Messages the broker publishes itself ($SYS, …) have no client and no ACL.
      if (!client) return null
      const denial = publishVerdict(client, packet.topic)
      return denial === null ? null : denyPublish(client, packet.topic, denial)
    },
    authorizeSubscribe(client, sub) {
      return maySubscribe(client, sharedSubscriptionFilter(sub.topic)) ? sub : null
    },
  }
}
