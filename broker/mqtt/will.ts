import type { PublishPacket } from 'aedes'

/*
 * The will, published. A CONNECT's Will Properties (5.0 §3.1.3.2) are Will Delay Interval plus
 * properties that a PUBLISH carries (§3.3.2.3): aedes 2.0.0-beta.1 publishes the will with all of
 * them, so subscribers got a PUBLISH with Will Delay Interval (0x18), a property a PUBLISH may not
 * have. Strict clients (Eclipse Paho) treat the packet as malformed and drop the connection.
 *
 * Both ways aedes publishes a will (a client's connection lost, after the delay; the wills of a
 * node that stopped heart-beating, on a cluster) pass the will through `authorizePublish` and then
 * publish that same object, so the properties are rewritten there: Payload Format Indicator,
 * Message Expiry Interval, Content Type, Response Topic, Correlation Data and User Properties, in
 * that order (the User Properties in theirs [MQTT-3.3.2-18]), and nothing else. A client's own
 * PUBLISH never has Will Delay Interval, so nothing else is touched.
 */

const PUBLISH_PROPERTIES_OF_A_WILL = ['payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'userProperties'] as const

type Properties = Record<string, unknown>

/** A will's properties become the PUBLISH ones; any other packet is left as it is. */
export function keepPublishPropertiesOfWill(packet: PublishPacket): void {
  const properties = (packet as { properties?: Properties }).properties
  if (properties === undefined || properties.willDelayInterval === undefined) return
  const publish: Properties = {}
  for (const name of PUBLISH_PROPERTIES_OF_A_WILL) {
    if (properties[name] !== undefined) publish[name] = properties[name]
  }
  ;(packet as { properties?: Properties }).properties = publish
}
