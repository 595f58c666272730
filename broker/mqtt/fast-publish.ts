import type { Aedes, Client } from 'aedes'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import { brokerInternals, brokerPublish, internals, writeLikeAedes, type AedesClient } from '../core/aedes-adapter.js'
import { setPublishHandler } from '../core/wire.js'
import { ownPathAcknowledged, startWithinQuota } from '../core/session.js'

/*
 * The hot path of an inbound PUBLISH, without aedes' generic handler chain. aedes 2.0.0-beta.1
 * handles a QoS 1 PUBLISH as: write the PUBACK, wait an event-loop turn (its write() calls back
 * from a setImmediate), then publish (lib/handlers/publish.js enqueuePublish). That acknowledges
 * the message before the node owns it [MQTT-4.3.2-4] (mqtt/puback-order.ts holds such PUBACKs back)
 * and delays every delivery by a turn.
 *
 * Here, for a PUBLISH that wire.ts decoded itself (3.1.1, or 5.0 without properties), whose topic
 * is valid, whose QoS is 0 or 1 and which comes from a connected client: authorize (the same
 * hooks), publish, and only then write the PUBACK. Each PUBACK follows its own publish, so two
 * publishes of one read that finish in a different order (one of them waiting for Redis writes)
 * are acknowledged in that order: the PUBACK ordering rule [MQTT-4.6.0-2] binds the client ("A
 * Client MUST follow these rules", §4.6), and aedes reads the connection's next packets only once
 * all of them are done. What aedes' handler does besides is kept: the keep-alive timer is
 * refreshed, a refused 5.0 publish gets PUBACK 0x87 with a Reason String and stays connected
 * (3.1.1: the connection is closed), a failed publish ends the connection without a PUBACK (the
 * client resends). Anything else goes through aedes unchanged.
 */

type Done = (err?: Error | null) => void

const NOT_AUTHORIZED = 0x87

class PubAck {
  readonly cmd = 'puback'
  /** Written by the fast path: its PUBACK follows the publish already (wire.ts handledFast). */
  readonly fleetmqFast = true
  reasonCode?: number
  properties?: { reasonString: string }
  constructor(readonly messageId: number) {}
}

const fastPubAck = (messageId: number): Packet => new PubAck(messageId) as unknown as Packet

export function installFastPublish(broker: Aedes): () => void {
  const maxTopicLevels = brokerInternals(broker).maxTopicLevels
  // Looked up per call: other features (puback-order.ts) wrap broker.publish too.
  const publish = brokerPublish(broker)

  /** What aedes' handlePublish checks before anything else; a failing packet goes to aedes for its error path. */
  const accepts = (c: Client, packet: IPublishPacket): boolean => {
    const client = internals(c)
    // QoS 2 (PUBREC, the stored packet identifier) stays with aedes.
    if (packet.qos > 1 || !client.connected || client.connackSent !== true || client.closed || client._parser._queue !== null) return false
    const topic = packet.topic
    if (topic.length === 0) return false
    let levels = 1
    for (let i = 0; i < topic.length; i++) {
      const code = topic.charCodeAt(i)
      if (code === 47) levels++ // '/'
      else if (code === 35 || code === 43) return false // '#', '+' [MQTT-3.3.2-2]
    }
    return levels <= maxTopicLevels
  }

  const take = (c: Client, packet: IPublishPacket): void => {
    const client = internals(c)
    // As aedes' parser listener does: the connection's next read waits for this packet.
    client._parsingBatch++
    if (client._keepaliveInterval > 0) client._keepaliveTimer?.refresh()
    // Within the node's Receive Maximum (core/session.ts): a 5.0 client's burst is paced.
    startWithinQuota(c, packet.qos, () => handle(client, packet))
  }

  const handle = (client: AedesClient, packet: IPublishPacket): void => {
    const done: Done = (err) => client._nextBatch(err)
    broker.authorizePublish(client, packet as never, (err?: Error | null) => {
      if (err) {
        refused(client, packet, err, done)
        return
      }
      if (packet.qos === 0) {
        publish(packet as never, client, done)
        return
      }
      publish(packet as never, client, (publishError?: Error | null) => {
        if (publishError) done(publishError)
        else writeLikeAedes(client, fastPubAck(packet.messageId!), done)
        // The PUBACK is written (or the connection ends): this PUBLISH no longer takes quota.
        ownPathAcknowledged(client)
      })
    })
  }

  /** aedes' authorizePublish refusal: 3.1.1 closes; 5.0 answers QoS 1 with 0x87 and goes on. */
  const refused = (client: AedesClient, packet: IPublishPacket, err: Error, done: Done): void => {
    if (client.version !== 5) {
      done(err)
      return
    }
    client.broker.emit('clientError', client, err)
    if (packet.qos === 0) {
      done()
      return
    }
    const ack = new PubAck(packet.messageId!)
    ack.reasonCode = NOT_AUTHORIZED
    if (err.message && client._requestProblemInformation !== false) ack.properties = { reasonString: err.message }
    writeLikeAedes(client, ack as unknown as Packet, () => done())
    ownPathAcknowledged(client)
  }

  return setPublishHandler({ accepts, take })
}
