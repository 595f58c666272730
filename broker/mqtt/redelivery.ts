import { Transform, type Readable } from 'node:stream'
import type { Aedes, Client } from 'aedes'
import { whenWindowHasRoom } from './flow-control.js'
import { brokerInternals, wrapPersistenceMethod } from '../core/aedes-adapter.js'

/*
 * [MQTT-3.3.1-1] "The DUP flag MUST be set to 1 by the Client or Server when it attempts to
 * re-deliver a PUBLISH packet." When a persistent session resumes, aedes sends the session's
 * stored QoS 1/2 messages (handlers/connect.js `emptyQueue`, from `persistence.outgoingStream`)
 * without it. A stored message that already has a packet identifier was sent before (aedes
 * stores the identifier, with `outgoingUpdate`, right before the write); one queued while the
 * client was away has none and goes out as a first delivery, DUP 0.
 *
 * The stored messages are also paced here: the next one is read only once the client's in-flight
 * window has room (mqtt/flow-control.ts `whenWindowHasRoom`), so a session that kept more messages
 * than `limits.maxQueued` is delivered in full instead of being disconnected again on resume.
 */

interface Stored { cmd?: string; messageId?: number; dup?: boolean }

const marked = new WeakSet<object>()

export function markRedeliveries(broker: Aedes): void {
  // Once per persistence: brokers in one process may share one.
  const persistence = brokerInternals(broker).persistence
  if (marked.has(persistence)) return
  marked.add(persistence)
  wrapPersistenceMethod(broker, 'outgoingStream', (original) => (client: Client) => {
    const mark = new Transform({
      objectMode: true,
      // One message ahead at most: the window decides when the next is read.
      readableHighWaterMark: 1,
      writableHighWaterMark: 1,
      transform(packet: Stored, _encoding, next) {
        const out = packet.messageId && (packet.cmd ?? 'publish') === 'publish' && !packet.dup ? { ...packet, dup: true } : packet
        whenWindowHasRoom(client, () => next(null, out))
      },
    })
    const source = original(client) as Readable
    source.on('error', (err: Error) => mark.destroy(err))
    return source.pipe(mark)
  })
}
