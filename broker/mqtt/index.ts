import type { AedesPublishPacket, Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import type { Config } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { internals } from '../core/aedes-adapter.js'
import { installFlowControl } from './flow-control.js'
import { installReceiveMaximum } from './receive-maximum.js'
import { subscriptionIdentifiers } from './subscription-identifiers.js'
import { installSubackOrder } from './suback-order.js'
import { grantedQos, takeOverDelivery } from '../core/delivery.js'
import { redirectReason, USE_ANOTHER_SERVER } from './redirect.js'
import { isSharedDelivery } from '../shared/topic.js'
import { tapOutbound } from '../core/wire.js'
import { keepPublishPropertiesOfWill } from './will.js'
import { installTopicAliases } from './topic-alias.js'
import { disconnectClient, REASON } from '../limits/refuse.js'

export { redirectClient, USE_ANOTHER_SERVER, SERVER_MOVED, type RedirectReasonCode } from './redirect.js'

/*
 * The MQTT 5.0 behaviour aedes 2.0.0-beta.1 lacks, closed in our code (docs/protocol.md lists each
 * with its clause):
 * - outbound Receive Maximum and Maximum Packet Size (see flow-control.ts);
 * - the node's own Receive Maximum: advertised, and 0x93 past it (see receive-maximum.ts);
 * - every matching Subscription Identifier on a message [MQTT-3.3.4-4] (see
 *   subscription-identifiers.ts);
 * - one SUBACK entry per filter, in the SUBSCRIBE's order [MQTT-3.9.3-1] (see suback-order.ts);
 * - overlapping subscriptions deliver at the highest QoS that matches [MQTT-3.3.4-2], and QoS of a
 *   delivery = min(published QoS, granted QoS) for wildcard subscriptions, retained messages sent
 *   on SUBSCRIBE and shared subscriptions too [MQTT-3.8.4-8] (see core/delivery.ts);
 * - Reason Strings on the DISCONNECTs the server sends and on failed SUBACKs [MQTT-3.14.2.2.3];
 * - a will is published with the PUBLISH properties of the will only, never Will Delay Interval
 *   (see will.ts);
 * - server → client Topic Aliases for clients that allow them (see topic-alias.ts);
 * - with `serverReference` configured, shutdown tells 5.0 clients where to go (0x9C with a Server
 *   Reference) instead of 0x8B Server shutting down.
 */

const SERVER_SHUTTING_DOWN = 0x8B
const REASON_CODE_ERROR_THRESHOLD = 0x80

const DISCONNECT_REASONS: Record<number, string> = {
  0x82: 'protocol error',
  0x8B: 'the server is shutting down',
  0x8E: 'another connection took over this client identifier',
  0x93: 'more QoS 1/2 messages in flight than the server\'s Receive Maximum',
  0x94: 'unknown or out-of-range topic alias',
  0x95: 'packet larger than the server\'s Maximum Packet Size',
  0x97: 'quota exceeded',
  0x98: 'administrative action',
}

const SUBACK_REASONS: Record<number, string> = {
  0x80: 'subscription refused',
  0x87: 'not authorized to subscribe to this topic filter',
  0x8F: 'invalid topic filter',
  0x97: 'subscription quota exceeded',
  0x9E: 'shared subscriptions are not supported',
}


export interface MqttProtocolOptions {
  /**
   * Ends a client with more than `limits.maxQueued` QoS 1/2 messages waiting for its window (the
   * limits feature's `queueFull`: counted and logged). Without it: DISCONNECT 0x97 and a warning.
   */
  readonly onQueueFull?: (client: Client, queued: number) => void
  /**
   * Ends a 5.0 client with more than `limits.receiveMaximum` QoS 1/2 PUBLISH packets
   * unacknowledged (the limits feature's `receiveMaximumExceeded`: counted and logged). Without
   * it: DISCONNECT 0x93 and a warning.
   */
  readonly onReceiveMaximumExceeded?: (client: Client, unacknowledged: number) => void
}

export function mqttProtocolFeature(config: Config, log: Logger, options: MqttProtocolOptions = {}): Feature {
  const { maxInflight, maxQueued } = config.limits
  const removeFlowControl = installFlowControl({
    log,
    maxInflight,
    maxQueued,
    onQueueFull: options.onQueueFull ?? ((client, queued) => {
      const message = `${queued} QoS 1/2 messages waiting for acknowledgements, limits.maxQueued is ${maxQueued}`
      log.warn({ clientId: client.id, limit: 'maxQueued' }, `disconnected ${client.id}: ${message}`)
      disconnectClient(client, REASON.QUOTA_EXCEEDED, message)
    }),
  })
  // After flow control: aliases are set up in the order packets leave (topic-alias.ts).
  const topicAliases = installTopicAliases(config.limits.topicAliasMaximum)
  const { receiveMaximum } = config.limits
  const removeReceiveMaximum = installReceiveMaximum({
    receiveMaximum,
    onExceeded: options.onReceiveMaximumExceeded ?? ((client, unacknowledged) => {
      const message = `${unacknowledged} QoS 1/2 PUBLISH packets unacknowledged, the Receive Maximum is ${receiveMaximum} (limits.receiveMaximum)`
      log.warn({ clientId: client.id, limit: 'receiveMaximum' }, `disconnected ${client.id}: ${message}`)
      disconnectClient(client, REASON.RECEIVE_MAXIMUM_EXCEEDED, message)
    }),
  })
  const identifiers = subscriptionIdentifiers()
  const removeSubackOrder = installSubackOrder()
  const removeProperties = tapOutbound({ cmds: ['disconnect', 'suback'], mqtt5Only: true }, (client, packet, send) => {
    if (packet.cmd === 'disconnect') return send(withDisconnectReason(packet, config.serverReference))
    if (packet.cmd === 'suback') {
      // [MQTT-3.1.2-29] no Reason String on a SUBACK when the client asked for none.
      const failed = (packet.granted as unknown[]).find((code): code is number => typeof code === 'number' && code >= REASON_CODE_ERROR_THRESHOLD)
      if (failed !== undefined && internals(client)._requestProblemInformation !== false && !packet.properties?.reasonString) {
        return send({ ...packet, properties: { ...packet.properties, reasonString: SUBACK_REASONS[failed] ?? 'subscription refused' } })
      }
    }
    return send(packet)
  })
  return {
    name: 'mqtt-protocol',
    preConnect(client, packet) {
      if (packet.protocolVersion === 5) topicAliases.connecting(client, packet.properties?.topicAliasMaximum)
      // Before any subscription (restored ones included) captures the client's deliver functions.
      takeOverDelivery(internals(client))
    },
    authorizePublish(_client, packet) {
      // A will is published after this check, as this object: without Will Delay Interval (will.ts).
      keepPublishPropertiesOfWill(packet)
      return null
    },
    authorizeSubscribe(client, sub) {
      identifiers.subscribed(client, sub)
      return sub
    },
    authorizeForward(client, packet) {
      if (client.version === 5) packet = identifiers.withAllIdentifiers(client, packet)
      if (packet.qos !== 2 || isSharedDelivery(packet)) return packet
      const granted = grantedQos(client, packet)
      return granted === 1 ? { ...packet, qos: 1 } as AedesPublishPacket : packet
    },
    close() {
      removeFlowControl()
      topicAliases.remove()
      removeReceiveMaximum()
      removeSubackOrder()
      removeProperties()
    },
  }
}

function withDisconnectReason(packet: Packet & { cmd: 'disconnect' }, serverReference: string | undefined): Packet {
  let reasonCode = packet.reasonCode ?? 0
  const properties = { ...packet.properties }
  // [MQTT-3.14.2.2.7] a draining node tells 5.0 clients where to reconnect.
  if (reasonCode === SERVER_SHUTTING_DOWN && serverReference !== undefined) {
    reasonCode = USE_ANOTHER_SERVER
    properties.serverReference = serverReference
    properties.reasonString = redirectReason(reasonCode, serverReference)
  }
  if (properties.reasonString === undefined && DISCONNECT_REASONS[reasonCode] !== undefined) {
    properties.reasonString = DISCONNECT_REASONS[reasonCode]
  }
  return { ...packet, reasonCode, properties }
}
