import type { Logger } from '../log.js'
import type { SpillLog, SpillPosition } from './spill.js'

/*
 * The buffer in front of every action. `push` is synchronous and O(1), so a slow or absent sink
 * never holds up the MQTT path that called it: the queue is bounded, and when it is full the
 * oldest waiting message is dropped and counted. One batch is in flight at a time and a failed
 * batch is retried, with exponential backoff, before anything behind it: messages reach the sink
 * in the order they were pushed, so in the order of each key. Messages leave the queue only when
 * the sink acknowledged them (at least once: a batch whose acknowledgement was lost is sent again).
 *
 * With a spill log (spill.ts) every message is appended to it as it is pushed: past `maxQueued`
 * in memory the rest stays on disk only and is read back in order as memory frees, a message
 * leaves the log only when the sink acknowledged it, and a restarted node sends what its log
 * holds first. Without one, past `maxQueued` the oldest message is dropped.
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
  /** Of `dropped`, by reason. */
  droppedBy: { memory_full: number; disk_full: number; shutdown: number }
  /** True from a failed attempt until the next successful one. */
  failing: boolean
}

interface Entry<T> {
  readonly item: T
  readonly at: number
  /** Where its record ends in the spill log. */
  readonly pos?: SpillPosition
}

export class ActionQueue<T> {
  readonly stats: QueueStats = { queued: 0, sent: 0, failed: 0, dropped: 0, droppedBy: { memory_full: 0, disk_full: 0, shutdown: 0 }, failing: false }
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
    /** Items go to it as JSON (`{at, item}`). */
    private readonly spill?: SpillLog,
  ) {
    if (spill && spill.stats.unread > 0) {
      this.stats.queued = spill.stats.unread
      this.schedulePump()
    }
  }

  /** Resolves once what was pushed so far is on disk (fsynced when the log says so); undefined without a spill log. */
  persisted(): Promise<void> | undefined {
    return this.spill?.flushed()
  }

  private get unread(): number {
    return this.spill ? this.spill.stats.unread : 0
  }

  private drop(count: number, reason: keyof QueueStats['droppedBy'], detail: string): void {
    if (count <= 0) return
    const before = this.stats.dropped
    this.stats.dropped += count
    this.stats.droppedBy[reason] += count
    if (before === 0 || Math.floor(before / 10_000) !== Math.floor(this.stats.dropped / 10_000)) {
      this.log.warn({ action: this.name, dropped: this.stats.dropped, reason }, `action ${this.name}: ${detail}; ${this.stats.dropped} dropped so far`)
    }
  }

  private schedulePump(): void {
    if (this.inFlight.length === 0 && this.retryTimer === undefined && !this.pumpQueued) {
      this.pumpQueued = true
      queueMicrotask(() => {
        this.pumpQueued = false
        this.pump()
      })
    }
  }

  get waitingCount(): number {
    return this.waiting.length - this.head
  }

  push(item: T): void {
    if (this.closed) {
      this.drop(1, 'shutdown', 'a message came after the shutdown began')
      return
    }
    const at = Date.now()
    if (this.spill) {
      // In memory only while nothing waits on disk before it: order is the log's.
      const inMemory = this.unread === 0 && this.waitingCount < this.settings.maxQueued
      const { pos, droppedSeqs, droppedUnread } = this.spill.append(Buffer.from(JSON.stringify({ at, item })), inMemory)
      if (droppedSeqs.length > 0) this.dropSegments(droppedSeqs, droppedUnread)
      if (inMemory) this.waiting.push({ item, at, pos })
    } else {
      if (this.waitingCount >= this.settings.maxQueued) {
        this.waiting[this.head++] = undefined
        this.drop(1, 'memory_full', `queue full (${this.settings.maxQueued} messages), dropping the oldest`)
      }
      this.waiting.push({ item, at })
    }
    this.stats.queued = this.waitingCount + this.inFlight.length + this.unread
    this.schedulePump()
  }

  /** The log deleted its oldest segments to keep its disk bound: their waiting messages go. */
  private dropSegments(seqs: readonly number[], unread: number): void {
    const last = Math.max(...seqs)
    let fromMemory = 0
    while (this.waitingCount > 0) {
      const entry = this.waiting[this.head] as Entry<T>
      if ((entry.pos?.seq ?? Infinity) > last) break
      this.waiting[this.head++] = undefined
      fromMemory++
    }
    this.drop(fromMemory + unread, 'disk_full', `spill log over maxDiskBytes (${this.spill?.stats.bytes} bytes on disk), dropping its oldest segment`)
  }

  /** Reads spilled records back while memory has room. */
  private refill(): void {
    if (!this.spill || this.unread === 0) return
    const room = Math.min(this.settings.maxQueued, this.settings.maxBatch * 4) - this.waitingCount
    if (room <= 0) return
    for (const record of this.spill.read(room)) {
      let entry: { at: number; item: T }
      try {
        entry = JSON.parse(record.body.toString()) as { at: number; item: T }
      } catch (err) {
        // The CRC matched, so this is a record of another version: skip it, never crash.
        this.drop(1, 'disk_full', `a spill log record does not decode (${(err as Error).message}), skipping it`)
        continue
      }
      this.waiting.push({ item: entry.item, at: entry.at, pos: record.pos })
    }
  }

  private take(): Entry<T>[] {
    if (this.waitingCount < this.settings.maxBatch) this.refill()
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
    if (this.waitingCount === 0 && this.unread === 0) {
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
      const last = batch[batch.length - 1]
      if (this.spill && last.pos) this.spill.ack(last.pos)
      if (this.stats.failing) this.log.info({ action: this.name, attempts: this.attempts }, `action ${this.name}: the sink takes messages again after ${this.attempts} failed attempts`)
      this.stats.failing = false
      this.attempts = 0
      this.inFlight = []
      this.stats.queued = this.waitingCount + this.unread
      if (this.stopped) return
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
    const left = this.waitingCount + this.inFlight.length + this.unread
    if (this.spill) {
      await this.spill.close()
      if (left > 0) this.log.info({ action: this.name, undelivered: left }, `action ${this.name}: ${left} messages not delivered at shutdown stay in its spill log, sent after the restart`)
    } else if (left > 0) {
      this.drop(left, 'shutdown', `${left} messages not delivered at shutdown (the buffer is in memory only: maxDiskBytes is 0)`)
    }
    await this.sink.close()
  }
}
