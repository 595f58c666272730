import type { Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import { tapOutbound, wireSize } from '../core/wire.js'

/*
 * Server → client Topic Aliases (5.0 §3.3.2.3.4): a fleet with long topic names saves their bytes
 * on every message after the first. A client that sets Topic Alias Maximum in its CONNECT gets, for
 * each topic name, an alias the first time the name is sent on the connection (the PUBLISH carries
 * both), and from then on the alias with an empty topic name. Aliases go from 1 up to the smaller
 * of the client's Topic Alias Maximum [MQTT-3.3.2-9] and `limits.topicAliasMaximum` (the node's
 * bound on both directions: memory per connection); once they are used up, further names are
 * sent in full. A client that sets none (0, the default) never gets one [MQTT-3.3.2-8].
 *
 * Aliases live as long as the connection [MQTT-3.3.2-10]: the messages a session stores keep their
 * topic names, and each connection starts over. The tap runs after flow control (mqtt/flow-control.ts,
 * registered first): aliases are set up in the order the client reads the packets, so a QoS 1
 * message held for the Receive Maximum never sets up an alias that a QoS 0 message sent before it
 * already uses. A PUBLISH that the alias would push over the client's Maximum Packet Size goes out
 * as it is (flow control checked that size).
 */

interface Aliases {
  readonly maximum: number
  readonly byTopic: Map<string, number>
}

type Publish = Packet & { cmd: 'publish' }

export interface TopicAliases {
  /** The client's CONNECT asked for `maximum` aliases (its Topic Alias Maximum). */
  connecting(client: Client, maximum: number | undefined): void
  remove(): void
}

export function installTopicAliases(nodeMaximum: number): TopicAliases {
  const states = new WeakMap<Client, Aliases>()

  const remove = tapOutbound({ cmds: ['publish'], mqtt5Only: true }, (client, packet, send) => {
    const aliases = states.get(client)
    if (aliases === undefined) return send(packet)
    const publish = packet as Publish
    const known = aliases.byTopic.get(publish.topic)
    if (known !== undefined) return send(aliased(client, publish, '', known))
    if (aliases.byTopic.size >= aliases.maximum) return send(publish)
    const alias = aliases.byTopic.size + 1
    const first = aliased(client, publish, publish.topic, alias)
    if (first === publish) return send(publish)
    aliases.byTopic.set(publish.topic, alias)
    return send(first)
  })

  return {
    connecting(client, maximum) {
      const allowed = Math.min(maximum ?? 0, nodeMaximum)
      if (allowed > 0) states.set(client, { maximum: allowed, byTopic: new Map() })
    },
    remove,
  }
}

/** The PUBLISH with its alias (and `topic`, the name or ''), or the packet itself when that would not fit the client's Maximum Packet Size. */
function aliased(client: Client, packet: Publish, topic: string, topicAlias: number): Publish {
  const next = { ...packet, topic, properties: { ...packet.properties, topicAlias } } as Publish
  const maximum = client.maximumPacketSize
  return maximum !== undefined && wireSize(next, 5) > maximum ? packet : next
}
