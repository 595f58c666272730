/*
 * `$share/<group>/<filter>` [MQTT-4.8.2]. aedes 2.0.0-beta.1 refuses such filters from 5.0 clients
 * (0x9E) before any hook runs, so the broker renames them on arrival to
 * `$fleetmq/share/<group>/<filter>`: aedes then grants, stores and restores them like any other
 * subscription (the name matches no topic anyone may publish to), and this module routes the
 * messages. Hooks that inspect subscriptions (ACL) see the renamed form; `parseSharedTopic`
 * accepts both.
 */

export const SHARE_PREFIX = '$share/'
export const INTERNAL_SHARE_PREFIX = '$fleetmq/share/'

export interface SharedTopic {
  readonly group: string
  readonly filter: string
}

/** Group and filter of a shared subscription, or undefined for any other topic or a malformed one. */
export function parseSharedTopic(topic: string): SharedTopic | undefined {
  const prefix = topic.startsWith(SHARE_PREFIX) ? SHARE_PREFIX : topic.startsWith(INTERNAL_SHARE_PREFIX) ? INTERNAL_SHARE_PREFIX : undefined
  if (prefix === undefined) return undefined
  const rest = topic.slice(prefix.length)
  const slash = rest.indexOf('/')
  if (slash <= 0) return undefined
  const group = rest.slice(0, slash)
  const filter = rest.slice(slash + 1)
  // [MQTT-4.8.2-1] the ShareName has at least one character and no '/', '+' or '#';
  // [MQTT-4.8.2-2] a topic filter follows it.
  if (/[+#]/.test(group) || filter.length === 0) return undefined
  return { group, filter }
}

export const internalSharedTopic = ({ group, filter }: SharedTopic): string => `${INTERNAL_SHARE_PREFIX}${group}/${filter}`
export const groupKey = ({ group, filter }: SharedTopic): string => `${group}/${filter}`

/**
 * Whether a delivery is a shared subscription's (index.ts `deliver`): it carries no brokerId, so
 * that aedes' de-duplication does not take it for a second copy of an ordinary subscription's, and
 * its QoS is already the member's.
 */
export const isSharedDelivery = (packet: { brokerId?: unknown }): boolean => packet.brokerId === undefined
