import type {
  AedesOptions,
  AedesPublishPacket,
  Client,
  ConnectPacket,
  PublishPacket,
  Subscription,
} from 'aedes'

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
  /** Before authentication. Throw (see `refuse.ts`) to refuse the connection. */
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
        (err) => callback(err, err === null))
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
      runChain(publishChecks.map((f) => () => f(client, packet)), undefined,
        (denied) => (denied ? { stop: true, value: denied } : { stop: false, input: undefined }),
        (err, denied) => callback(err ?? (denied as Error | undefined) ?? null))
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
      runChain(publishedHooks.map((f) => () => f(packet, client)), undefined, () => ({ stop: false, input: undefined }),
        (err) => callback(err))
    },
  }
}
