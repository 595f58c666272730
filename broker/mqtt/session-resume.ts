import type { Aedes, Client } from 'aedes'
import { internals } from '../core/aedes-adapter.js'

/*
 * A resumed session gets the messages queued for it. 5.0 §4.1: the session state includes the
 * QoS 1/2 messages queued while the client was away; a CONNECT with Clean Start 0 resumes it, and
 * its Session Expiry Interval only says how long the session outlives *this* connection. A client
 * that reconnects with Clean Start 0 and no Session Expiry Interval (0: the session ends with the
 * connection) resumes the session all the same, queued messages included, with the Message Expiry
 * they have left (§3.3.2.3.3).
 *
 * aedes 2.0.0-beta.1 sends the stored messages right after the CONNACK (lib/handlers/connect.js
 * emptyQueue) but drops every one of them when `client.clean` is true, and `clean` there means
 * "Session Expiry 0", not "Clean Start 1": such a client got CONNACK Session Present 1 and then none
 * of its messages. While those stored messages are sent — from the CONNACK until aedes marks the
 * client `connected` — `clean` reads false for such a client, so they are sent; before (restoring
 * its subscriptions) and after (live deliveries, its close, which wipes the session: its expiry is
 * 0), it reads as aedes set it. Defined on that connection only: every other client keeps aedes'
 * plain field.
 */

export function sendQueuedMessagesOnResume(broker: Aedes): void {
  broker.on('connackSent', (_packet, client: Client) => {
    const c = internals(client)
    if (c.version !== 5 || c._cleanStart !== false || c.clean !== true) return
    let clean = true
    Object.defineProperty(c, 'clean', {
      configurable: true,
      enumerable: true,
      get: () => clean && (c.connected || c.closed),
      set: (value: boolean) => { clean = value },
    })
  })
}
