import { emitterInternals } from '../core/aedes-adapter.js'

/*
 * Makes the broker's message emitter (mqemitter, and the cluster fan-out which inherits it) safe
 * from unbounded synchronous recursion, and its queue O(1) per message.
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
 *
 * The queue itself: mqemitter keeps it in two arrays, `_messageQueue` and `_messageCallbacks`,
 * pushed by emit() and drained by released() with shift(). V8 shifts an array in place only while
 * its storage is in the regular heap; past ~16,000 entries the storage is in large-object space and
 * every shift() copies the whole array (8,000 shifts: 0.7 ms; 64,000: 13 s). Fan-in queues that
 * many: every PUBLISH of a read is emitted at once, 100 run, the rest wait, so 24 publishers whose
 * reads bring ~900 messages each hold ~20,000 in the queue. That was issue 19's cliff: fan-in QoS 0
 * fell from ~140k msg/s with 16 publishers to ~25k with 24 and more, half the broker's CPU in
 * released(). The guard gives both properties a queue with the same push/shift/length and a head
 * index, so a dequeue never moves what stays behind.
 */

/** push/shift/length of an array, with shift() in O(1): the head moves, the entries stay. */
export class Fifo<T> {
  private items: (T | undefined)[] = []
  private head = 0

  constructor(initial: readonly T[] = []) {
    this.items.push(...initial)
  }

  get length(): number {
    return this.items.length - this.head
  }

  push(item: T): number {
    this.items.push(item)
    return this.length
  }

  shift(): T | undefined {
    if (this.head === this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= 1_024 && this.head * 2 >= this.items.length) {
      // A queue that never empties is compacted once half of it is spent: amortised O(1).
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
}

export function guardEmitter(mq: object): void {
  const emitter = emitterInternals(mq)
  const run = emitter._do
  if (typeof run !== 'function') {
    // A future mqemitter without `_do` has a different queue; refuse to start rather than run unguarded.
    throw new Error('the message emitter has no _do(): mqemitter changed; review broker/limits/emitter-guard.ts')
  }
  if (emitter._fleetmqGuarded) return
  if (!Array.isArray(emitter._messageQueue) || !Array.isArray(emitter._messageCallbacks)) {
    throw new Error('the message emitter has no _messageQueue/_messageCallbacks arrays: mqemitter changed; review broker/limits/emitter-guard.ts')
  }
  emitter._fleetmqGuarded = true
  // released() and emit() look both up on the emitter at each call.
  emitter._messageQueue = new Fifo(emitter._messageQueue as unknown[])
  emitter._messageCallbacks = new Fifo(emitter._messageCallbacks as unknown[])

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
