import type { AedesOptions } from 'aedes'
import type { Redis } from 'ioredis'

/*
 * A Redis write error (NOREPLICAS under `min-replicas-to-write`, OOM under `maxmemory`, READONLY
 * during a failover) must never end the process. Two places let one escape as an unhandled
 * rejection, which Node turns into a crash:
 *
 * 1. aedes itself: `lib/handlers/connect.js` storeWill calls `persistence.delWill(client)
 *    .finally(…)` and `lib/handlers/pubrel.js` calls `persistence.incomingDelPacket(…).finally(…)`;
 *    `.finally` passes a rejection on to a promise nobody handles. Every other call site in
 *    aedes 2.0.0-beta.1 (aedes.js, lib/client.js, lib/handlers/*) hands the rejection to a
 *    callback (CONNACK refusal, closed connection) or to the broker's 'error' event.
 * 2. aedes-persistence-redis 11.2.2 sends some commands without awaiting them: `lrem`/`rpush` of
 *    the will list in putWill/delWill, `lrem` of stale outgoing entries. Their rejections have no
 *    handler at all.
 *
 * So: every command of the persistence's Redis client gets a handler attached (the caller that
 * awaits it still sees the error), and the persistence object is wrapped so that a rejection is
 * counted, logged and returned to aedes — except for delWill before storing a will and
 * incomingDelPacket, whose failure aedes ignores anyway (a stale entry, overwritten or expired
 * later), which resolve instead.
 *
 * storeWill also passes the aedes Client, which has no `brokerId`, so aedes-persistence-redis
 * looked for the key `will:undefined:<clientId>` and never found the will a previous connection
 * of this client stored on this node (`will:<brokerId>:<clientId>`): a client that reconnected
 * without a will kept its old one in Redis, published later if this node died. The wrapper fills
 * in this node's broker id.
 */

type Persistence = NonNullable<AedesOptions['persistence']>
type AnyFn = (...args: unknown[]) => unknown

export interface PersistenceErrors {
  /** Failed persistence operations, by operation name. */
  readonly byOp: Readonly<Record<string, number>>
  readonly total: number
  /** Failed Redis commands of the persistence client (includes the ones aedes-persistence-redis does not await). */
  readonly commands: number
}

export interface GuardOptions {
  /** Called for each failed operation; `ignored` when the failure is swallowed (see above). */
  onError(op: string, err: Error, ignored: boolean): void
  /** This node's aedes id, for wills keyed by broker. */
  brokerId(): string | undefined
  /**
   * Resolves once replicas hold the writes made so far (replica-acks.ts); the writes a client is
   * acknowledged for (REPLICATED) resolve only after it. Absent: resolve when the primary stored them.
   */
  replicated?(): Promise<void>
}

/**
 * The writes an acknowledgement to a client depends on: a QoS 1/2 message queued for persistent
 * sessions and a retained message (PUBACK, PUBREC), a QoS 2 message received (PUBREC), a
 * subscription (SUBACK). Losing any other write costs a duplicate or a stale entry, not a message.
 */
const REPLICATED = new Set(['outgoingEnqueue', 'outgoingEnqueueCombi', 'storeRetained', 'incomingStorePacket', 'addSubscriptions'])
const writesNothing = (op: string, args: unknown[]): boolean => op === 'outgoingEnqueueCombi' && Array.isArray(args[0]) && args[0].length === 0

/** Rejections of these operations resolve instead: aedes chains them with `.finally`. */
const SWALLOWED = new Set(['incomingDelPacket'])
const STREAMS = new Set(['createRetainedStream', 'createRetainedStreamCombi', 'outgoingStream', 'streamWill'])

/**
 * A PUBACK from a clean session: aedes never stored its QoS 1 messages (lib/client.js deliverQoS
 * writes them straight to the socket when `client.clean`), so aedes-persistence-redis would look
 * its packet id up in its cache, find nothing and resolve undefined. Answering that at once saves
 * two promise layers and a cache lookup per acknowledged message on the subscriber's node. A QoS 2
 * flow (PUBREC, PUBCOMP) is stored even for clean sessions, so only PUBACK takes this path.
 */
function isCleanPuback(client: unknown, packet: unknown): boolean {
  return (client as { clean?: boolean } | undefined)?.clean === true && (packet as { cmd?: string } | undefined)?.cmd === 'puback'
}
const NOTHING_STORED = Promise.resolve(undefined)

/*
 * The collapse of a persistent subscriber under a backlog (issue 16). aedes-persistence-redis
 * keeps a session's undelivered QoS 1/2 messages in the list `outgoing:<client id>` (RPUSH, in
 * arrival order) and, at every PUBACK, removes the acknowledged one with `LREM outgoing:<id> 0
 * <packet key>`: count 0 scans the whole list, so each acknowledgement costs O(backlog) in Redis.
 * Measured on a two-node cluster with one persistent subscriber behind by ≈ 20,000 messages: LREM
 * took 297 µs per call against ≈ 1 µs for every other command (INFO commandstats: 5.9 s of Redis'
 * single core for 19,810 acknowledgements), and the subscriber received 450–515 msg/s while the
 * publishers were acknowledged at 4,000/s. A packet key is pushed once per session (one RPUSH per
 * subscriber and message), and the acknowledged message is the oldest in flight, so it sits
 * within the in-flight window of the head: count 1 stops there, O(window) instead of O(backlog).
 * Should a key ever be in a list twice (it is not), the copy left behind is redelivered on resume
 * with DUP 1, which QoS 1 allows.
 */
const OUTGOING_LIST = 'outgoing:'
type RedisCommand = { name: string; args: unknown[] }

function removeFirstOnly(command: RedisCommand): void {
  const [key, count] = command.args
  if (command.name === 'lrem' && typeof key === 'string' && key.startsWith(OUTGOING_LIST) && count === '0') command.args[1] = '1'
}

/**
 * Attaches a rejection handler to every command `redis` sends, and bounds the persistence's LREM
 * of an acknowledged message to the first match (see above).
 */
export function guardRedisCommands(redis: Redis, onCommandError: (err: Error) => void): void {
  const send = redis.sendCommand.bind(redis) as (...args: unknown[]) => unknown
  ;(redis as unknown as { sendCommand: AnyFn }).sendCommand = (...args: unknown[]) => {
    removeFirstOnly(args[0] as RedisCommand)
    const result = send(...args)
    // Marks the promise handled; whoever awaits it still gets the rejection.
    if (result && typeof (result as Promise<unknown>).catch === 'function') (result as Promise<unknown>).catch(onCommandError)
    return result
  }
}

export function guardPersistence(persistence: Persistence, options: GuardOptions): Persistence {
  const wrapped = new Map<PropertyKey, unknown>()
  // A stream op replaced through the proxy (see `set`) wraps the guarded original: its stream
  // passes the original's error on, and the error is reported once.
  const reported = new WeakSet<Error>()
  const wrap = (op: string, fn: AnyFn): AnyFn => {
    if (STREAMS.has(op)) {
      return (...args) => {
        const stream = fn.apply(persistence, args) as NodeJS.EventEmitter
        // A stream with no 'error' listener throws: aedes pipes the retained stream without one.
        stream?.on?.('error', (err: Error) => {
          if (reported.has(err)) return
          reported.add(err)
          options.onError(op, err, false)
        })
        return stream
      }
    }
    return (...args) => {
      // A callback-style call handles its own errors.
      if (typeof args[args.length - 1] === 'function') return fn.apply(persistence, args)
      if (op === 'outgoingClearMessageId' && isCleanPuback(args[0], args[1])) return NOTHING_STORED
      let ignore = SWALLOWED.has(op)
      if (op === 'delWill') {
        const client = args[0] as { id: string; brokerId?: string }
        if (client && client.brokerId === undefined) {
          // storeWill's call (see above): the will this node stored for this client id.
          args[0] = { id: client.id, brokerId: options.brokerId() }
          ignore = true
        }
      }
      let result: unknown
      try {
        result = fn.apply(persistence, args)
      } catch (err) {
        options.onError(op, err as Error, false)
        return Promise.reject(err)
      }
      if (!(result instanceof Promise)) return result
      let stored: Promise<unknown> = result
      const replicated = options.replicated
      if (replicated !== undefined && REPLICATED.has(op) && !writesNothing(op, args)) {
        stored = stored.then((value) => replicated().then(() => value))
      }
      return stored.catch((err: Error) => {
        options.onError(op, err, ignore)
        if (ignore) return op === 'delWill' ? null : undefined
        throw err
      })
    }
  }
  return new Proxy(persistence, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      // aedes requires `setup` to be an AsyncFunction: pass it through untouched.
      if (typeof value !== 'function' || typeof prop !== 'string' || prop === 'setup' || prop === 'constructor') {
        return typeof value === 'function' && prop === 'setup' ? (value as AnyFn).bind(target) : value
      }
      if (['on', 'once', 'off', 'emit', 'removeListener', 'addListener', 'destroy'].includes(prop)) return (value as AnyFn).bind(target)
      let fn = wrapped.get(prop)
      if (fn === undefined) wrapped.set(prop, fn = wrap(prop, value as AnyFn))
      return fn
    },
    // A method replaced later is guarded in turn: mqtt/redelivery.ts replaces `outgoingStream`
    // (DUP on re-deliveries, resends paced by the client's window) and core/delivery.ts
    // `createRetainedStreamCombi` (both through core/aedes-adapter.ts). Without this the proxy kept serving its cached wrapper of the
    // original, and on a cluster both replacements were silently skipped.
    set(target, prop, value, receiver) {
      wrapped.delete(prop)
      return Reflect.set(target, prop, value, receiver)
    },
  })
}
