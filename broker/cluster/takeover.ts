import type { Aedes } from 'aedes'
import { brokerInternals, type AedesBroker } from '../core/aedes-adapter.js'

/*
 * Session takeover across nodes. When a client id connects on node B, aedes on B publishes
 * `$SYS/<B>/new/clients` and aedes on every other node closes its connection with that id — but
 * silently, and it leaves that node's session-expiry and will-delay timers running, which would
 * later wipe the session or publish the will of a client that is alive on B.
 *
 * This listener is registered on the emitter before aedes' own, so it runs first:
 * - a 5.0 client is sent DISCONNECT 0x8E Session taken over before aedes closes it
 *   [MQTT-3.1.4-3] (§4.13: the Server SHOULD send a DISCONNECT with a reason code);
 * - the timers this node holds for that client id are cancelled, now and once the old
 *   connection's close has finished (the close arms a session-expiry timer of its own).
 */

export const SESSION_TAKEN_OVER = 0x8e
export const NEW_CLIENTS_TOPIC = '$SYS/+/new/clients'

interface Emitter {
  on(topic: string, listener: (packet: { topic: string; payload: Buffer | string }, done: () => void) => void): unknown
}

export interface Takeover {
  /** Cross-node takeovers seen by this node (its client was closed because it connected elsewhere). */
  count(): number
  attach(aedes: Aedes): void
}

export function listenForTakeovers(mq: Emitter): Takeover {
  let broker: AedesBroker | undefined
  let taken = 0
  const pending = new Set<string>()
  mq.on(NEW_CLIENTS_TOPIC, (packet, done) => {
    const serverId = packet.topic.split('/')[1]
    const clientId = packet.payload.toString()
    if (!broker || serverId === broker.id) return done()
    const old = broker.clients[clientId]
    if (old && !old.closed) {
      taken++
      pending.add(clientId)
      old.disconnect({ reasonCode: SESSION_TAKEN_OVER })
    }
    broker.clearSessionExpiry(clientId)
    broker.clearDelayedWill(clientId)
    done()
  })
  return {
    count: () => taken,
    attach(aedes) {
      broker = brokerInternals(aedes)
      aedes.on('clientDisconnect', (client) => {
        if (!pending.delete(client.id)) return
        // aedes arms the expiry right after emitting clientDisconnect.
        setImmediate(() => {
          broker?.clearSessionExpiry(client.id)
          broker?.clearDelayedWill(client.id)
        })
      })
    },
  }
}
