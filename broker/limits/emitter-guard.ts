/*
 * Makes the broker's message emitter (mqemitter, and the cluster fan-out which inherits it) safe
 * from unbounded synchronous recursion.
 *
 * Root cause of `RangeError: Maximum call stack size exceeded` in aedes 1.2.0 and 2.0.0-beta.1:
 * mqemitter runs at most `concurrency` (100) messages at once and queues the rest. When one
 * finishes, fastparallel calls `released()`, which shifts the next queued message into `_do()`.
 * For a message that matches no subscriber (or whose subscribers answer synchronously),
 * fastparallel completes at once, inside `_do()`, and calls `released()` again: one
 * `released → _do → parallel → released` level per queued message. A subscriber that stopped
 * reading holds all 100 slots (each delivery waits for its socket to drain) while publishers
 * fill the queue; when it disconnects, its subscription disappears and the whole queue unwinds
 * through that recursion, thousands of frames deep.
 *
 * The guard trampolines `_do`: a call made while another `_do` is on the stack is queued and run
 * by the outermost call in a loop, in the same order and without waiting for a new tick. The
 * stack stays one level deep whatever the queue holds.
 */

type Do = (this: unknown, message: unknown, callback: unknown) => unknown

interface EmitterInternals {
  _do?: Do
  _fleetmqGuarded?: boolean
}

export function guardEmitter(mq: object): void {
  const emitter = mq as EmitterInternals
  const run = emitter._do
  if (typeof run !== 'function') {
    // A future mqemitter without `_do` has a different queue; refuse to start rather than run unguarded.
    throw new Error('the message emitter has no _do(): mqemitter changed; review broker/limits/emitter-guard.ts')
  }
  if (emitter._fleetmqGuarded) return
  emitter._fleetmqGuarded = true

  const pending: [unknown, unknown, unknown][] = []
  let head = 0
  let running = false

  const drain = (): void => {
    running = true
    try {
      while (head < pending.length) {
        const [self, message, callback] = pending[head]
        pending[head++] = undefined as never
        run.call(self, message, callback)
      }
      pending.length = 0
      head = 0
    } finally {
      running = false
      // A throw left work behind: run it on the next tick instead of stranding it.
      if (head < pending.length) setImmediate(drain)
    }
  }

  emitter._do = function guardedDo(this: unknown, message: unknown, callback: unknown) {
    pending.push([this, message, callback])
    if (!running) drain()
    return this
  }
}
