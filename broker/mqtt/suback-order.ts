import type { Client } from 'aedes'
import type { ISubackPacket, ISubscribePacket } from 'mqtt-packet'
import { tapInbound, tapOutbound } from '../core/wire.js'

/*
 * [MQTT-3.9.3-1] "The SUBACK packet sent by the Server to the Client MUST contain a Reason Code
 * for each Topic Filter/Subscription Option pair", in the order of the SUBSCRIBE. aedes
 * de-duplicates a SUBSCRIBE's filters through an object keyed by filter (handlers/subscribe.js
 * `_dedupe`), so a filter named twice gets one SUBACK entry, and the object's key order puts
 * integer-like filters (`7`, `42`) first: the entries after them answer the wrong filters.
 *
 * Here a SUBSCRIBE that would be changed that way is de-duplicated before aedes sees it (the last
 * occurrence wins, as [MQTT-3.8.4-3] replaces an existing subscription), and the SUBACK is put
 * back in the client's order, one entry per filter it sent (a repeated filter gets the code of
 * the occurrence that took effect). SUBSCRIBE packets of one filter, or whose filters aedes keeps
 * in order, cost one pass over the filters.
 */

/** Per client: SUBSCRIBE packet id → for each filter the client sent, its index in aedes' SUBACK. */
const pending = new WeakMap<Client, Map<number, number[]>>()

/** The order aedes' `_dedupe` leaves distinct filters in: the key order of a plain object. */
function aedesOrder(topics: readonly string[]): string[] {
  const keyed: Record<string, true> = {}
  for (const topic of topics) keyed[topic] = true
  return Object.keys(keyed)
}

export function installSubackOrder(): () => void {
  const removeInbound = tapInbound({ cmds: ['subscribe'] }, (client, packet) => {
    const subscribe = packet as ISubscribePacket
    const subs = subscribe.subscriptions
    if (subs.length < 2 || subscribe.messageId === undefined) return
    const topics = subs.map((s) => s.topic)
    const order = aedesOrder(topics)
    if (order.length === topics.length && order.every((t, i) => t === topics[i])) return
    // Last occurrence of each filter, in aedes' order.
    const last = new Map<string, (typeof subs)[number]>()
    for (const sub of subs) last.set(sub.topic, sub)
    subscribe.subscriptions = order.map((t) => last.get(t)!)
    const index = new Map(order.map((t, i) => [t, i]))
    let forClient = pending.get(client)
    if (forClient === undefined) pending.set(client, forClient = new Map())
    forClient.set(subscribe.messageId, topics.map((t) => index.get(t)!))
  })
  const removeOutbound = tapOutbound({ cmds: ['suback'] }, (client, packet, send) => {
    const suback = packet as ISubackPacket
    const forClient = pending.get(client)
    const positions = suback.messageId === undefined ? undefined : forClient?.get(suback.messageId)
    if (positions === undefined) return send(packet)
    forClient!.delete(suback.messageId!)
    const granted = suback.granted as number[]
    return send({ ...suback, granted: positions.map((p) => granted[p]) } as ISubackPacket)
  })
  return () => {
    removeInbound()
    removeOutbound()
  }
}
