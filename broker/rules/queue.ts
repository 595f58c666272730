import type { Logger } from '../log.js'

/*
 * The buffer in front of every action. `push` is synchronous and O(1), so a slow or absent sink
 * never holds up the MQTT path that called it: the queue is bounded, and when it is full the
 * oldest waiting message is dropped and counted. One batch is in flight at a time and a failed
 * batch is retried, with exponential backoff, before anything behind it: messages reach the sink
 * in the order they were pushed, so in the order of each key. Messages leave the queue only when
 * the sink acknowledged them (at least once: a batch whose acknowledgement was lost is sent again).
 *
 * Not yet: spilling to disk past the memory bound (docs/rules.md lists it as open).
 */

export interface Sink<T> {
  /** Resolves once the sink holds every item of the batch; rejects to have it retried. */
  send(batch: readonly T[]): Promise<void>
  close(): Promise<void>
}

export interface QueueSettings {
  /** Messages waiting (besides the batch in flight); past it the oldest is dropped. */
  readonly maxQueued: number
  /** Messages per send. */
  readonly maxBatch: number
  /** First retry delay, ms; doubles per failed attempt up to `maxBackoffMs`. */
  readonly initialBackoffMs: number
  readonly maxBackoffMs: number
}

export interface QueueStats {
  /** Waiting and in flight. */
  queued: number
  sent: number
  /** Send attempts that failed (each retried). */
  failed: number
  dropped: number
  /** True from a failed attempt until the next successful one. */
  failing: boolean
}

interface Entry<T> {
  readonly item: T
  readonly at: number
}

export class ActionQueue<T> {
  readonly stats: QueueStats = { queued: 0, sent: 0, failed: 0, dropped: 0, failing: false }
  private waiting: (Entry<T> | undefined)[] = []
  private head = 0
  private inFlight: Entry<T>[] = []
  private attempts = 0
  private retryTimer: NodeJS.Timeout | undefined
  /** A pump is queued: a burst of pushes in one turn queues one, not one each. */
  private pumpQueued = false
  private closed = false
  /** Past the shutdown grace: no more attempts. */
  private stopped = false
  private idle: (() => void)[] = []

  constructor(
    readonly name: string,
    private readonly sink: Sink<T>,
    private readonly settings: QueueSettings,
    private readonly log: Logger,
    /** Called per acknowledged message with its milliseconds in the queue. */
    private readonly onSent: (latencyMs: number) => void = () => {},
  ) {}

  get waitingCount(): number {
    return this.waiting.length - this.head
  }

  push(item: T): void {
    if (this.closed) {
      this.stats.dropped++
      return
    }
    if (this.waitingCount >= this.settings.maxQueued) {
      this.waiting[this.head++] = undefined
      this.stats.dropped++
      if (this.stats.dropped === 1 || this.stats.dropped % 10_000 === 0) {
        this.log.warn({ action: this.name, dropped: this.stats.dropped, maxQueued: this.settings.maxQueued }, `action ${this.name}: queue full (${this.settings.maxQueued} messages), dropping the oldest; ${this.stats.dropped} dropped so far`)
      }
    }
    this.waiting.push({ item, at: Date.now() })
    this.stats.queued = this.waitingCount + this.inFlight.length
    if (this.inFlight.length === 0 && this.retryTimer === undefined && !this.pumpQueued) {
      this.pumpQueued = true
      queueMicrotask(() => {
        this.pumpQueued = false
        this.pump()
      })
    }
  }

  private take(): Entry<T>[] {
    const end = Math.min(this.waiting.length, this.head + this.settings.maxBatch)
    const batch = this.waiting.slice(this.head, end) as Entry<T>[]
    this.head = end
    // Compact now and then rather than shift per message.
    if (this.head > 4096 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head)
      this.head = 0
    }
    return batch
  }

  private pump(): void {
    if (this.inFlight.length > 0 || this.retryTimer !== undefined) return
    if (this.waitingCount === 0) {
      for (const resolve of this.idle.splice(0)) resolve()
      return
    }
    this.inFlight = this.take()
    this.attempt()
  }

  private attempt(): void {
    const batch = this.inFlight
    this.sink.send(batch.map((e) => e.item)).then(() => {
      const now = Date.now()
      for (const entry of batch) this.onSent(now - entry.at)
      this.stats.sent += batch.length
      if (this.stats.failing) this.log.info({ action: this.name, attempts: this.attempts }, `action ${this.name}: the sink takes messages again after ${this.attempts} failed attempts`)
      this.stats.failing = false
      this.attempts = 0
      this.inFlight = []
      this.stats.queued = this.waitingCount
      this.pump()
    }, (err: unknown) => {
      if (this.stopped) return
      this.stats.failed++
      this.attempts++
      if (!this.stats.failing) this.log.warn({ action: this.name, err }, `action ${this.name}: the sink refused a batch (${(err as Error).message}); retrying with backoff, ${this.stats.queued} messages queued`)
      this.stats.failing = true
      const delay = Math.min(this.settings.maxBackoffMs, this.settings.initialBackoffMs * 2 ** Math.min(this.attempts - 1, 20))
      // ±20 % jitter: actions sharing a connector do not retry in step.
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined
        this.attempt()
      }, delay * (0.8 + Math.random() * 0.4))
    })
  }

  /** Resolves once nothing is queued or in flight, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.stats.queued === 0 && this.inFlight.length === 0) return true
    let timer: NodeJS.Timeout | undefined
    const idle = new Promise<boolean>((resolve) => this.idle.push(() => resolve(true)))
    const timeout = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs) })
    const result = await Promise.race([idle, timeout])
    clearTimeout(timer)
    return result
  }

  /** Stops taking messages, gives the sink `graceMs` to take what is queued, then closes it. */
  async close(graceMs: number): Promise<void> {
    this.closed = true
    if (this.retryTimer !== undefined) {
      // One last attempt now rather than after the backoff.
      clearTimeout(this.retryTimer)
      this.retryTimer = undefined
      this.attempt()
    }
    await this.drain(graceMs)
    this.stopped = true
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    const left = this.waitingCount + this.inFlight.length
    if (left > 0) {
      this.stats.dropped += left
      this.log.warn({ action: this.name, undelivered: left }, `action ${this.name}: ${left} messages not delivered at shutdown (the buffer is in memory only)`)
    }
    await this.sink.close()
  }
}
