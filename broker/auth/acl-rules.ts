import { BlockList, isIP } from 'node:net'
import type { AclRule } from '../config/schema.js'
import { parseSharedTopic } from '../shared/topic.js'

/*
 * ACL evaluation as pure functions: rules from `acl.rules`, first match wins, `acl.default` when
 * none matches. The feature in `acl.ts` only feeds them the client and the topic.
 *
 * Topic filters follow MQTT 5.0 §4.7 (the same in 3.1.1 §4.7): '/' separates levels, '+' matches
 * one level, '#' the rest including the parent level [MQTT-4.7.1-2], and a filter that starts
 * with a wildcard does not match topic names that start with '$' [MQTT-4.7.2-1].
 */

export type Level =
  | { readonly kind: 'literal'; readonly value: string }
  | { readonly kind: 'single' }
  | { readonly kind: 'multi' }

const SINGLE: Level = { kind: 'single' }
const MULTI: Level = { kind: 'multi' }

/** A topic name or filter as levels; '+' and '#' are wildcards only as whole levels. */
export function parseFilter(filter: string): Level[] {
  return filter.split('/').map((value) => (value === '+' ? SINGLE : value === '#' ? MULTI : { kind: 'literal', value }))
}

/** Who the rule applies to and what it substitutes for `%u` and `%c`. */
export interface AclSubject {
  /** Undefined for anonymous clients: rules with `%u` or `users` never match them. */
  readonly username?: string
  readonly clientId: string
  /** The real client address; rules with `addresses` never match when it is unknown. */
  readonly address?: string
  readonly admin: boolean
  /** Admitted without credentials, which only `allowAnonymous: true` allows (development mode). */
  readonly anonymous?: boolean
}

/**
 * A value `%u` or `%c` may stand for: one whole, non-empty topic level without wildcard
 * characters. A client id `a/#` would otherwise turn `devices/%c/#` into a wildcard, and `a/b`
 * into a subtree of client `a`'s own `devices/a/#` [MQTT-4.7.1-1, MQTT-4.7.1-2].
 */
const isSafeLevel = (value: string): boolean => value !== '' && !/[/+#]/.test(value)

/**
 * A rule's topic template with `%u` and `%c` replaced, or undefined when the template does not
 * apply to the subject: it needs a username the client does not have, or the username or client
 * id it needs is not one safe topic level (`isSafeLevel`). Substituted text is always literal.
 */
export function expandTemplate(template: string, subject: Pick<AclSubject, 'username' | 'clientId'>): Level[] | undefined {
  const levels: Level[] = []
  for (const raw of template.split('/')) {
    if (raw === '+') levels.push(SINGLE)
    else if (raw === '#') levels.push(MULTI)
    else if (!raw.includes('%')) levels.push({ kind: 'literal', value: raw })
    else {
      if (raw.includes('%u') && (subject.username === undefined || !isSafeLevel(subject.username))) return undefined
      if (raw.includes('%c') && !isSafeLevel(subject.clientId)) return undefined
      levels.push({ kind: 'literal', value: raw.replace(/%[uc]/g, (p) => (p === '%u' ? (subject.username as string) : subject.clientId)) })
    }
  }
  return levels
}

const isDollar = (level: Level | undefined): boolean => level?.kind === 'literal' && level.value.startsWith('$')
const isWild = (level: Level | undefined): boolean => level !== undefined && level.kind !== 'literal'

/** Every topic name that `filter` matches is also matched by `rule` (a topic name is a filter without wildcards). */
export function covers(rule: readonly Level[], filter: readonly Level[]): boolean {
  // [MQTT-4.7.2-1] a rule that starts with a wildcard matches no '$' topic.
  if (isWild(rule[0]) && isDollar(filter[0])) return false
  const walk = (i: number, j: number): boolean => {
    if (i < rule.length && rule[i].kind === 'multi') return true
    if (i === rule.length || j === filter.length) return i === rule.length && j === filter.length
    const r = rule[i]
    const f = filter[j]
    if (f.kind === 'multi') return false
    if (f.kind === 'single') return r.kind === 'single' && walk(i + 1, j + 1)
    if (r.kind === 'literal' && r.value !== f.value) return false
    return walk(i + 1, j + 1)
  }
  return walk(0, 0)
}

/** Some topic name is matched by both `rule` and `filter`. */
export function overlaps(rule: readonly Level[], filter: readonly Level[]): boolean {
  if ((isWild(rule[0]) && isDollar(filter[0])) || (isWild(filter[0]) && isDollar(rule[0]))) return false
  const walk = (i: number, j: number): boolean => {
    if ((i < rule.length && rule[i].kind === 'multi') || (j < filter.length && filter[j].kind === 'multi')) return true
    if (i === rule.length || j === filter.length) return i === rule.length && j === filter.length
    const r = rule[i]
    const f = filter[j]
    if (r.kind === 'literal' && f.kind === 'literal' && r.value !== f.value) return false
    return walk(i + 1, j + 1)
  }
  return walk(0, 0)
}

export interface CompiledRule {
  /** Position in `acl.rules`, for logs. */
  readonly index: number
  readonly action: 'allow' | 'deny'
  readonly publish: boolean
  readonly subscribe: boolean
  readonly users?: ReadonlySet<string>
  readonly clientIds?: ReadonlySet<string>
  readonly addresses?: BlockList
  readonly topics: readonly string[]
}

/** Splits `10.0.0.0/8` into a BlockList entry; throws with the rule's path when it is not an address. */
function addAddress(list: BlockList, entry: string, where: string): void {
  const [ip, bits, ...rest] = entry.split('/')
  const family = isIP(ip)
  const prefix = bits === undefined ? undefined : Number(bits)
  if (!family || rest.length || (prefix !== undefined && (!/^\d+$/.test(bits) || prefix > (family === 4 ? 32 : 128)))) {
    throw new Error(`${where}: "${entry}" is not an IPv4/IPv6 address or CIDR block (examples: 10.0.0.0/8, fd00::/8, 192.0.2.7)`)
  }
  const type = family === 4 ? 'ipv4' : 'ipv6'
  if (prefix === undefined) list.addAddress(ip, type)
  else list.addSubnet(ip, prefix, type)
}

/** A BlockList of addresses and CIDR blocks (`where` names the setting in the error). */
export function addressList(entries: readonly string[], where: string): BlockList {
  const list = new BlockList()
  entries.forEach((entry, i) => addAddress(list, entry, `${where}[${i}]`))
  return list
}

const exemptLists = new WeakMap<object, BlockList>()

/**
 * `limits.rateExemptAddresses` as one BlockList per config: the connect-rate limits and the login
 * backoff both consult it, and a config is immutable once loaded.
 */
export function rateExemptList(limits: { readonly rateExemptAddresses: readonly string[] }): BlockList {
  let list = exemptLists.get(limits)
  if (!list) {
    list = addressList(limits.rateExemptAddresses, 'limits.rateExemptAddresses')
    exemptLists.set(limits, list)
  }
  return list
}

/** Whether `address` (IPv4, IPv6 or IPv4-mapped IPv6 as sockets report it) is in `list`. */
export function addressIn(list: BlockList, address: string): boolean {
  const normalized = normalizeAddress(address)
  return normalized !== undefined && list.check(normalized.address, normalized.family)
}

export function compileRules(rules: readonly AclRule[]): CompiledRule[] {
  return rules.map((rule, index) => {
    const addresses = rule.addresses && addressList(rule.addresses, `acl.rules[${index}].addresses`)
    return {
      index,
      action: rule.action,
      publish: rule.permission !== 'subscribe',
      subscribe: rule.permission !== 'publish',
      users: rule.users && new Set(rule.users),
      clientIds: rule.clientIds && new Set(rule.clientIds),
      addresses,
      topics: rule.topics,
    }
  })
}

/** `::ffff:192.0.2.7` (a v4 peer on a dual-stack socket) is checked as `192.0.2.7`. */
export function normalizeAddress(address: string): { address: string; family: 'ipv4' | 'ipv6' } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  const plain = mapped ? mapped[1] : address
  const family = isIP(plain)
  return family === 0 ? undefined : { address: plain, family: family === 4 ? 'ipv4' : 'ipv6' }
}

function appliesTo(rule: CompiledRule, subject: AclSubject): boolean {
  if (rule.users && (subject.username === undefined || !rule.users.has(subject.username))) return false
  if (rule.clientIds && !rule.clientIds.has(subject.clientId)) return false
  if (rule.addresses && (subject.address === undefined || !addressIn(rule.addresses, subject.address))) return false
  return true
}

export type AclAction = 'publish' | 'subscribe'

export interface AclDecision {
  readonly allowed: boolean
  /** `acl.rules[2]`, `$SYS (admins only)` or `acl.default`. */
  readonly by: string
}

/**
 * The topics every authenticated client (a device) may publish and subscribe to when no configured
 * rule decided: its own client id's and its own username's. Fixed, so that a node with no `acl`
 * section is usable with `acl.default: deny`; a configured rule comes first and can narrow them.
 */
export const DEVICE_TOPICS = ['devices/%c/#', 'users/%u/#'] as const
const deviceTemplates = DEVICE_TOPICS.map((template) => ({ template, by: `built-in ${template}` }))

/**
 * The verdict for `subject` publishing to topic name `topic`, or subscribing with `topic` as
 * filter. For a publish a rule matches when one of its filters matches the topic. For a
 * subscription an allow rule matches only when one of its filters covers every topic the
 * subscription can match (`sensors/%u/#` allows `sensors/alice/+/temp`, not `sensors/#`), and a
 * deny rule matches when one of its filters shares any topic with it (deny `secret/#` refuses
 * `#` and `+/x`), so that a subscription can never receive what a deny rule withholds.
 *
 * After the configured rules come the built-in ones, in this order:
 * 1. `$SYS/#` may be subscribed to by admins only and published to by no client (the broker alone
 *    publishes its statistics there);
 * 2. admins may publish and subscribe to every other topic;
 * 3. anonymous clients (only admitted with `allowAnonymous: true`, development mode) too;
 * 4. an authenticated client may use `DEVICE_TOPICS` (its client id's and username's).
 * Then `acl.default`. A configured rule comes first and so can change any of these.
 */
export function decide(rules: readonly CompiledRule[], fallback: 'allow' | 'deny', subject: AclSubject, action: AclAction, topic: string): AclDecision {
  let parsed: Level[] | undefined
  const target = (): Level[] => (parsed ??= parseFilter(topic))
  for (const rule of rules) {
    if (!(action === 'publish' ? rule.publish : rule.subscribe) || !appliesTo(rule, subject)) continue
    const matches = rule.topics.some((template) => {
      const levels = expandTemplate(template, subject)
      if (!levels) return false
      return action === 'subscribe' && rule.action === 'deny' ? overlaps(levels, target()) : covers(levels, target())
    })
    if (matches) return { allowed: rule.action === 'allow', by: `acl.rules[${rule.index}]` }
  }
  // Shares topics with `$SYS/#` exactly when the first level is `$SYS` (wildcards never match '$').
  if (topic === '$SYS' || topic.startsWith('$SYS/')) {
    return { allowed: action === 'subscribe' && subject.admin, by: '$SYS (admins only)' }
  }
  if (subject.admin) return { allowed: true, by: 'built-in admins' }
  if (subject.anonymous) return { allowed: true, by: 'built-in anonymous (allowAnonymous)' }
  if (subject.username !== undefined) {
    for (const { template, by } of deviceTemplates) {
      const levels = expandTemplate(template, subject)
      if (levels && covers(levels, target())) return { allowed: true, by }
    }
  }
  return { allowed: fallback === 'allow', by: 'acl.default' }
}

/**
 * The filter a shared subscription really listens to [MQTT-4.8.2], whether the ACL sees it as sent
 * (`$share/<group>/<filter>`) or as the broker renamed it on arrival (`$fleetmq/share/…`).
 */
export function sharedSubscriptionFilter(topic: string): string {
  return parseSharedTopic(topic)?.filter ?? topic
}
