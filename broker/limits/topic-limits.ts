import type { Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import { topicLevels } from '../mqtt/topic.js'
import { tapInbound, tapOutbound } from '../core/wire.js'
import { INTERNAL_SHARE_PREFIX, SHARE_PREFIX } from '../shared/topic.js'
import { sendDisconnect } from './refuse.js'

/*
 * `limits.maxTopicLength` and `limits.maxTopicLevels` on topic filters, and `maxTopicLevels` on
 * 5.0 topic names, answered with the protocol's reason codes.
 *
 * aedes 2.0.0-beta.1 checks the levels itself (its `maxTopicLevels`, also what keeps qlobber from
 * throwing), before any hook runs, and ends the connection with no reason code; and a hook can
 * only allow or deny a subscription, which aedes reports as 0x87 Not authorized. So these checks
 * run on the packets as they arrive (core/wire.ts taps, before aedes):
 *
 * - SUBSCRIBE: a filter over either limit is taken out of the packet before aedes sees it and its
 *   SUBACK entry is put back: 0x8F Topic Filter invalid for 5.0 ("The Topic Filter is correctly
 *   formed but is not allowed for this Client", §3.9.3), 0x80 Failure for 3.1/3.1.1 [MQTT-3.9.3-2
 *   in 3.1.1]. The other filters of the packet are granted as usual [MQTT-3.8.4-6, 3.8.4-7].
 * - UNSUBSCRIBE: a filter with too many levels (no such subscription can exist) is taken out too;
 *   5.0 gets 0x8F in its UNSUBACK, 3.1.1 a plain UNSUBACK.
 * - PUBLISH (5.0): too many levels is DISCONNECT 0x90 Topic Name invalid ("The Topic Name is not
 *   malformed, but is not accepted by this Client or Server", §3.14.2.1), as `maxTopicLength` does
 *   (limits/index.ts); aedes then closes the connection. A DISCONNECT rather than PUBACK 0x90:
 *   QoS 0 has no acknowledgement to carry it, and the node treats both topic limits alike.
 *   3.1.1 has no server DISCONNECT: aedes closes the connection.
 *
 * Levels are counted as aedes counts them: a shared subscription `$share/<group>/<filter>` is
 * routed as `$fleetmq/share/<group>/<filter>` (broker/shared/topic.ts), one level more. Length is
 * measured on the filter as the client sent it (this feature's taps run before the renaming).
 */

/** 5.0 SUBACK / UNSUBACK reason code [§3.9.3, §3.11.3]. */
export const TOPIC_FILTER_INVALID = 0x8F
/** 3.1.1 SUBACK return code for a refused subscription. */
const FAILURE = 0x80
const TOPIC_NAME_INVALID = 0x90

const SHARED_EXTRA_LEVELS = topicLevels(INTERNAL_SHARE_PREFIX) - topicLevels(SHARE_PREFIX)

export type TopicLimit = 'maxTopicLength' | 'maxTopicLevels'

export interface TopicLimitsOptions {
  readonly maxTopicLength: number
  readonly maxTopicLevels: number
  /** Logs and counts a refused topic filter. */
  readonly refusedFilter: (client: Client, filter: string, limit: TopicLimit, message: string) => void
}

/** A SUBACK or UNSUBACK to complete: the reason code of each refused filter, by position. */
interface Refusal {
  readonly ack: 'suback' | 'unsuback'
  readonly codes: readonly (number | undefined)[]
}

/** aedes' level count of a filter (see above). */
const filterLevels = (filter: string): number => topicLevels(filter) + (filter.startsWith(SHARE_PREFIX) ? SHARED_EXTRA_LEVELS : 0)

export function installTopicLimits({ maxTopicLength, maxTopicLevels, refusedFilter }: TopicLimitsOptions): () => void {
  const pending = new WeakMap<Client, Map<number, Refusal>>()

  /** Why a filter is refused, or undefined. */
  const check = (filter: string, lengthToo: boolean): { limit: TopicLimit; message: string } | undefined => {
    const levels = filterLevels(filter)
    if (levels > maxTopicLevels) {
      const shared = filter.startsWith(SHARE_PREFIX) ? ` (a shared subscription counts its $share/<group>/ levels, and one more)` : ''
      return { limit: 'maxTopicLevels', message: `topic filter of ${levels} levels${shared} is more than ${maxTopicLevels} (limits.maxTopicLevels)` }
    }
    if (!lengthToo) return undefined
    const length = Buffer.byteLength(filter, 'utf8')
    if (length > maxTopicLength) return { limit: 'maxTopicLength', message: `topic filter of ${length} bytes is longer than ${maxTopicLength} (limits.maxTopicLength)` }
    return undefined
  }

  const remember = (client: Client, messageId: number | undefined, refusal: Refusal): void => {
    if (messageId === undefined) return
    let byId = pending.get(client)
    if (byId === undefined) pending.set(client, byId = new Map())
    byId.set(messageId, refusal)
  }

  const removeInbound = tapInbound({ cmds: ['subscribe', 'unsubscribe'] }, (client, packet) => {
    if (packet.cmd === 'subscribe') {
      let codes: (number | undefined)[] | undefined
      packet.subscriptions.forEach((sub, i) => {
        const refused = check(sub.topic, true)
        if (refused === undefined) return
        refusedFilter(client, sub.topic, refused.limit, refused.message)
        ;(codes ??= new Array(packet.subscriptions.length).fill(undefined))[i] = client.version === 5 ? TOPIC_FILTER_INVALID : FAILURE
      })
      if (codes === undefined) return
      packet.subscriptions = packet.subscriptions.filter((_, i) => codes![i] === undefined)
      remember(client, packet.messageId, { ack: 'suback', codes })
    } else if (packet.cmd === 'unsubscribe') {
      let codes: (number | undefined)[] | undefined
      packet.unsubscriptions.forEach((filter, i) => {
        const refused = check(filter, false)
        if (refused === undefined) return
        refusedFilter(client, filter, refused.limit, refused.message)
        ;(codes ??= new Array(packet.unsubscriptions.length).fill(undefined))[i] = TOPIC_FILTER_INVALID
      })
      if (codes === undefined) return
      packet.unsubscriptions = packet.unsubscriptions.filter((_, i) => codes![i] === undefined)
      // 3.1/3.1.1 UNSUBACK has no payload: nothing to put back.
      if (client.version === 5) remember(client, packet.messageId, { ack: 'unsuback', codes })
    }
  })

  const removeAcks = tapOutbound({ cmds: ['suback', 'unsuback'] }, (client, packet, send) => {
    const byId = pending.get(client)
    const refusal = byId?.get((packet as { messageId?: number }).messageId!)
    if (refusal === undefined || refusal.ack !== packet.cmd) return send(packet)
    byId!.delete((packet as { messageId: number }).messageId)
    const granted = ((packet as { granted?: (number | object)[] }).granted ?? []) as number[]
    const merged: number[] = []
    let next = 0
    for (const code of refusal.codes) merged.push(code ?? granted[next++])
    while (next < granted.length) merged.push(granted[next++])
    return send({ ...packet, granted: merged } as Packet)
  })

  const removePublish = tapInbound({ cmds: ['publish'], mqtt5Only: true }, (client, packet) => {
    if (packet.cmd !== 'publish') return
    const topic = packet.topic
    // A topic of n characters has at most n + 1 levels: most need no count.
    if (typeof topic !== 'string' || topic.length < maxTopicLevels || topicLevels(topic) <= maxTopicLevels) return
    // aedes rejects the PUBLISH right after this tap and closes the connection (the limits
    // feature logs and counts it from aedes' clientError).
    sendDisconnect(client, TOPIC_NAME_INVALID, `topic name of ${topicLevels(topic)} levels is more than ${maxTopicLevels} (limits.maxTopicLevels)`)
  })

  return () => {
    removeInbound()
    removeAcks()
    removePublish()
  }
}
