import type {
  AedesOptions,
  AedesPublishPacket,
  Client,
  ConnectPacket,
  PublishPacket,
  Subscription,
} from 'aedes'
import { ConnectRefusal, writeRefusal } from './limits/refuse.js'

/*
 * Features (auth, ACL, limits, shared subscriptions, …) each contribute hooks; the server composes
 * them into aedes' single-function options, in the order the features are listed. A feature stays
 * one module with one job and never needs to know which others run.
 *
 * Hot-path hooks (authorizePublish, authorizeForward) may answer synchronously; the others may
 * return promises.
 */

export type Awaitable<T> = T | Promise<T>

export interface Feature {
  readonly name: string
  /** Before authentication. Throw a `ConnectRefusal` (limits/refuse.ts) to refuse with a CONNACK reason code. */
  preConnect?(client: Client, packet: ConnectPacket): Awaitable<void>
  /**
   * Credentials check. The first feature that returns a verdict decides; `undefined` passes on.
   */
  authenticate?(client: Client, username: string | undefined, password: Buffer | undefined): Awaitable<boolean | undefined>
  /** Return an Error to deny the publish. */
  authorizePublish?(client: Client | null, packet: PublishPacket): Awaitable<Error | null | undefined>
  /** Return the (possibly rewritten) subscription, or null to deny it (SUBACK 0x80 / 0x87). */
  authorizeSubscribe?(client: Client, sub: Subscription): Awaitable<Subscription | null>
  /** Synchronous, per delivery: return the packet to send, or null to withhold it from this client. */
  authorizeForward?(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null
  /** After a message was accepted and routed. */
  published?(packet: AedesPublishPacket, client: Client | null): Awaitable<void>
  /** Stop timers and release resources. */
  close?(): Awaitable<void>
  /** SIGHUP: re-read files (TLS material, user store) without dropping connections. */
  reload?(): Awaitable<void>
}

type AedesHooks = Required<Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward' | 'published'>>

const isPromise = <T>(value: Awaitable<T>): value is Promise<T> => typeof (value as Promise<T>)?.then === 'function'

/** Runs `steps` in order, synchronously while they answer synchronously. */
function runChain<T, R>(
  steps: readonly ((input: T) => Awaitable<R>)[],
  input: T,
  next: (result: R, input: T) => { stop: true; value: unknown } | { stop: false; input: T },
  finish: (err: Error | null, value?: unknown) => void,
): void {
  let index = 0
  const step = (current: T): void => {
    while (index < steps.length) {
      let result: Awaitable<R>
      try {
        result = steps[index++](current)
      } catch (err) {
        finish(err as Error)
        return
      }
      if (isPromise(result)) {
        result.then((resolved) => {
          const verdict = next(resolved, current)
          if (verdict.stop) finish(null, verdict.value)
          else step(verdict.input)
        }, (err: Error) => finish(err))
        return
      }
      const verdict = next(result, current)
      if (verdict.stop) {
        finish(null, verdict.value)
        return
      }
      current = verdict.input
    }
    finish(null, current)
  }
  step(input)
}

type PublishCheck = NonNullable<Feature['authorizePublish']>
type PublishedHook = NonNullable<Feature['published']>

/** The rest of the publish checks once check `index` answered with a promise. */
async function authorizePublishAsync(checks: readonly PublishCheck[], index: number, pending: Promise<Error | null | undefined>,
  client: Client | null, packet: PublishPacket): Promise<Error | null> {
  try {
    const denied = await pending
    if (denied) return denied
    for (let i = index + 1; i < checks.length; i++) {
      const next = await checks[i](client, packet)
      if (next) return next
    }
    return null
  } catch (err) {
    return err as Error
  }
}

async function publishedAsync(hooks: readonly PublishedHook[], index: number, pending: Promise<void>,
  packet: AedesPublishPacket, client: Client | null): Promise<Error | null> {
  try {
    await pending
    for (let i = index + 1; i < hooks.length; i++) await hooks[i](packet, client)
    return null
  } catch (err) {
    return err as Error
  }
}

export function composeHooks(features: readonly Feature[]): AedesHooks {
  const pick = <K extends keyof Feature>(key: K) =>
    features.filter((f) => f[key] !== undefined).map((f) => (f[key] as (...args: unknown[]) => unknown).bind(f)) as NonNullable<Feature[K]>[]

  const preConnects = pick('preConnect')
  const authenticators = pick('authenticate')
  const publishChecks = pick('authorizePublish')
  const subscribeChecks = pick('authorizeSubscribe')
  const forwards = pick('authorizeForward')
  const publishedHooks = pick('published')

  return {
    preConnect(client, packet, callback) {
      runChain(preConnects.map((f) => () => f(client, packet)), undefined, () => ({ stop: false, input: undefined }),
        (err) => {
          // aedes sends no CONNACK for a preConnect error: a refusal writes its own first.
          if (err instanceof ConnectRefusal) void writeRefusal(client.conn, packet.protocolVersion ?? 4, err).then(() => callback(err, false))
          else callback(err, err === null)
        })
    },
    authenticate(client, username, password, callback) {
      runChain(authenticators.map((f) => () => f(client, username, password)), undefined as boolean | undefined,
        (verdict) => (verdict === undefined ? { stop: false, input: undefined } : { stop: true, value: verdict }),
        (err, verdict) => {
          if (err) callback(err as Parameters<typeof callback>[0], false)
          else callback(null, verdict === true)
        })
    },
    authorizePublish(client, packet, callback) {
      // Per message: a plain loop while the checks answer synchronously, no closure per call.
      for (let i = 0; i < publishChecks.length; i++) {
        let denied: Awaitable<Error | null | undefined>
        try {
          denied = publishChecks[i](client, packet)
        } catch (err) {
          callback(err as Error)
          return
        }
        if (isPromise(denied)) {
          void authorizePublishAsync(publishChecks, i, denied, client, packet).then(callback)
          return
        }
        if (denied) {
          callback(denied)
          return
        }
      }
      callback(null)
    },
    authorizeSubscribe(client, sub, callback) {
      runChain(subscribeChecks.map((f) => (current: Subscription) => f(client, current)), sub,
        (result) => (result === null ? { stop: true, value: null } : { stop: false, input: result }),
        (err, result) => callback(err, err ? null : (result as Subscription | null)))
    },
    authorizeForward(client, packet) {
      let current = packet
      for (const forward of forwards) {
        const next = forward(client, current)
        if (next === null) return null
        current = next
      }
      return current
    },
    published(packet, client, callback) {
      for (let i = 0; i < publishedHooks.length; i++) {
        let done: Awaitable<void>
        try {
          done = publishedHooks[i](packet, client)
        } catch (err) {
          callback(err as Error)
          return
        }
        if (isPromise(done)) {
          void publishedAsync(publishedHooks, i, done, packet, client).then(callback)
          return
        }
      }
      callback(null)
    },
  }
}
