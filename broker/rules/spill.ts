import { closeSync, fdatasync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import type { Logger } from '../log.js'

/*
 * An action's spill log: every message the action takes is appended here before the client's
 * PUBACK is released, so a node killed with -9 (or stopped) sends it after restart. Append-only
 * segment files `<dir>/<seq>.log`, each record `u32 length, u32 CRC-32 of the body, body`
 * (big-endian). `<dir>/cursor` names the first record the sink has not acknowledged (segment and
 * offset); it is rewritten after each acknowledged batch without fsync: a cursor lost or behind
 * only sends records again (at least once). Segments wholly before the cursor are deleted.
 *
 * Writes are grouped: appends of one event-loop turn go to the file in one write, then one
 * fdatasync for the group (when `fsync` is on); `flushed()` resolves after both, and the rules
 * feature holds a QoS 1/2 PUBACK on it. A kill -9 loses nothing written (the page cache outlives
 * the process); a power loss loses nothing fsynced.
 *
 * Past `maxDiskBytes` the oldest whole segment is deleted (its unsent records counted as dropped),
 * so the bound is kept to within one segment (maxDiskBytes / 8).
 *
 * A record whose length or CRC does not check (a torn write at a crash) ends its segment: it and
 * what follows in that segment are skipped with a warning, and the last segment is truncated there
 * so appends continue on a clean tail. Never a crash.
 */

const HEADER = 8
const MAX_RECORD = 64 * 1024 * 1024

export interface SpillPosition {
  readonly seq: number
  /** Offset just past the record. */
  readonly end: number
}

export interface SpillRecord {
  readonly body: Buffer
  readonly pos: SpillPosition
}

interface Segment {
  readonly seq: number
  readonly path: string
  /** Bytes written or pending. */
  size: number
  /** Valid bytes (a corrupt tail in an old segment is not read past). */
  records: number
  /** Records handed out by `read` (they are in the queue's memory). */
  read: number
  /** Offset of the next record to hand out. */
  readOffset: number
  fd: number | undefined
}

export interface SpillSettings {
  readonly maxDiskBytes: number
  readonly fsync: boolean
  /** Segment size; default maxDiskBytes / 8 (at least 4 KiB, at most 64 MiB). */
  readonly segmentBytes?: number
}

export interface SpillStats {
  /** Bytes in the log's segments (acknowledged records of the oldest segment included). */
  bytes: number
  /** Records on disk that are not in memory yet (spilled past the memory bound, or replayed). */
  unread: number
}

const segmentName = (seq: number): string => `${String(seq).padStart(16, '0')}.log`

export class SpillLog {
  readonly stats: SpillStats = { bytes: 0, unread: 0 }
  private segments: Segment[] = []
  private pending: Buffer[] = []
  private pendingBytes = 0
  private flushScheduled = false
  private waiters: (() => void)[] = []
  /** Segments written since the last fdatasync. */
  private dirty = new Set<Segment>()
  private syncing: Promise<void> | undefined
  private readonly segmentBytes: number
  private readonly cursorPath: string
  private closed = false
  /** The promise of the group being gathered. */
  private group: Promise<void> | undefined

  constructor(readonly dir: string, private readonly settings: SpillSettings, private readonly log: Logger, private readonly name: string) {
    this.segmentBytes = settings.segmentBytes ?? Math.min(64 * 1024 * 1024, Math.max(4096, Math.floor(settings.maxDiskBytes / 8)))
    this.cursorPath = join(dir, 'cursor')
    this.open()
  }

  private open(): void {
    try {
      mkdirSync(this.dir, { recursive: true })
    } catch (err) {
      throw new Error(`action ${this.name}: cannot create its spill log folder ${this.dir} (${(err as Error).message}); make dataDir writable by the node, or set maxDiskBytes: 0 to keep the buffer in memory only`)
    }
    const seqs = readdirSync(this.dir).filter((f) => /^\d{16}\.log$/.test(f)).map((f) => Number(f.slice(0, 16))).sort((a, b) => a - b)
    let cursor = { seq: 0, offset: 0 }
    try {
      const parsed = JSON.parse(readFileSync(this.cursorPath, 'utf8')) as { seq?: unknown; offset?: unknown }
      if (typeof parsed.seq === 'number' && typeof parsed.offset === 'number') cursor = { seq: parsed.seq, offset: parsed.offset }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ action: this.name, err }, `action ${this.name}: the spill log's cursor is unreadable (${(err as Error).message}); sending its records again from the oldest segment`)
    }
    for (const seq of seqs) {
      const path = join(this.dir, segmentName(seq))
      if (seq < cursor.seq) {
        unlinkSync(path)
        continue
      }
      const segment = this.scan(seq, path, seq === cursor.seq ? cursor.offset : 0, seq === seqs[seqs.length - 1])
      this.segments.push(segment)
    }
    // Past the cursor's segment: a fresh one must not be read from the cursor's offset.
    if (this.segments.length === 0) this.segments.push(this.newSegment(cursor.seq + 1))
    else {
      const last = this.segments[this.segments.length - 1]
      last.fd = openSync(last.path, 'a')
    }
    this.recount()
    if (this.stats.unread > 0) this.log.info({ action: this.name, records: this.stats.unread, bytes: this.stats.bytes }, `action ${this.name}: ${this.stats.unread} messages in the spill log from before the restart are sent first`)
  }

  /** Reads a segment's records from `from`, counting them; a bad record ends it. */
  private scan(seq: number, path: string, from: number, last: boolean): Segment {
    const data = readFileSync(path)
    let offset = from > data.length ? data.length : from
    let records = 0
    while (offset < data.length) {
      const problem = this.check(data, offset)
      if (problem) {
        this.log.warn({ action: this.name, segment: path, offset, problem }, `action ${this.name}: spill log ${segmentName(seq)} has ${problem} at byte ${offset}; skipping the ${data.length - offset} bytes from there (a write torn by a crash)`)
        if (last) {
          const fd = openSync(path, 'r+')
          ftruncateSync(fd, offset)
          closeSync(fd)
        }
        break
      }
      offset += HEADER + data.readUInt32BE(offset)
      records++
    }
    return { seq, path, size: last ? offset : data.length, records, read: 0, readOffset: from > data.length ? data.length : from, fd: undefined }
  }

  private check(data: Buffer, offset: number): string | undefined {
    if (data.length - offset < HEADER) return 'a truncated record header'
    const length = data.readUInt32BE(offset)
    if (length > MAX_RECORD) return `an impossible record length (${length})`
    if (data.length - offset - HEADER < length) return 'a truncated record'
    if (crc32(data.subarray(offset + HEADER, offset + HEADER + length)) !== data.readUInt32BE(offset + 4)) return 'a record whose CRC does not match'
    return undefined
  }

  private newSegment(seq: number): Segment {
    const path = join(this.dir, segmentName(seq))
    return { seq, path, size: 0, records: 0, read: 0, readOffset: 0, fd: openSync(path, 'a') }
  }

  private recount(): void {
    let bytes = 0
    let unread = 0
    for (const s of this.segments) {
      bytes += s.size
      unread += s.records - s.read
    }
    this.stats.bytes = bytes
    this.stats.unread = unread
  }

  private get active(): Segment {
    return this.segments[this.segments.length - 1]
  }

  /**
   * Appends a record; returns where it ends, and the segments dropped to keep the disk bound
   * (the caller drops what it holds of them).
   */
  append(body: Buffer, inMemory: boolean): { pos: SpillPosition; droppedSeqs: number[]; droppedUnread: number } {
    const record = Buffer.allocUnsafe(HEADER + body.length)
    record.writeUInt32BE(body.length, 0)
    record.writeUInt32BE(crc32(body), 4)
    body.copy(record, HEADER)
    let active = this.active
    if (active.size > 0 && active.size + record.length > this.segmentBytes) {
      this.writePending()
      active = this.roll()
    }
    this.pending.push(record)
    this.pendingBytes += record.length
    active.size += record.length
    active.records++
    this.stats.bytes += record.length
    if (inMemory) {
      active.read++
      active.readOffset = active.size
    } else this.stats.unread++
    this.dirty.add(active)
    this.scheduleFlush()
    const dropped = this.stats.bytes > this.settings.maxDiskBytes ? this.dropOldest() : { droppedSeqs: [], droppedUnread: 0 }
    return { pos: { seq: active.seq, end: active.size }, ...dropped }
  }

  private roll(): Segment {
    const old = this.active
    // Its last writes may still need their fdatasync: the flush closes it after that.
    if (!this.dirty.has(old) && old.fd !== undefined) {
      closeSync(old.fd)
      old.fd = undefined
    }
    const next = this.newSegment(old.seq + 1)
    this.segments.push(next)
    return next
  }

  private dropOldest(): { droppedSeqs: number[]; droppedUnread: number } {
    const droppedSeqs: number[] = []
    let droppedUnread = 0
    while (this.stats.bytes > this.settings.maxDiskBytes && this.segments.length > 1) {
      const oldest = this.segments.shift() as Segment
      droppedSeqs.push(oldest.seq)
      droppedUnread += oldest.records - oldest.read
      this.stats.bytes -= oldest.size
      this.stats.unread -= oldest.records - oldest.read
      this.forget(oldest)
    }
    return { droppedSeqs, droppedUnread }
  }

  private forget(segment: Segment): void {
    this.dirty.delete(segment)
    if (segment.fd !== undefined) closeSync(segment.fd)
    segment.fd = undefined
    try {
      unlinkSync(segment.path)
    } catch { /* already gone */ }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => {
      this.flushScheduled = false
      this.flush()
    })
  }

  private writePending(): void {
    if (this.pending.length === 0) return
    const fd = this.active.fd as number
    const data = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes)
    this.pending = []
    this.pendingBytes = 0
    let written = 0
    while (written < data.length) written += writeSync(fd, data, written)
  }

  /** Writes the pending group, then fdatasyncs it (one at a time: the next group waits). */
  private flush(): void {
    if (this.closed) return
    this.writePending()
    if (!this.settings.fsync) {
      for (const s of this.dirty) {
        if (s !== this.active && s.fd !== undefined) {
          closeSync(s.fd)
          s.fd = undefined
        }
      }
      this.dirty.clear()
      this.group = undefined
      for (const resolve of this.waiters.splice(0)) resolve()
      return
    }
    if (this.syncing) return
    this.group = undefined
    const waiters = this.waiters.splice(0)
    const segments = [...this.dirty]
    this.dirty.clear()
    this.syncing = Promise.all(segments.map((s) => new Promise<void>((resolve) => {
      if (s.fd === undefined) return resolve()
      fdatasync(s.fd, (err) => {
        if (err) this.log.warn({ action: this.name, err }, `action ${this.name}: fdatasync of the spill log failed (${err.message})`)
        resolve()
      })
    }))).then(() => {
      for (const s of segments) {
        if (s !== this.active && s.fd !== undefined && !this.dirty.has(s)) {
          closeSync(s.fd)
          s.fd = undefined
        }
      }
      this.syncing = undefined
      for (const resolve of waiters) resolve()
      if (this.waiters.length > 0) this.flush()
    })
  }

  /** Resolves once every record appended so far is written (and fsynced when `fsync` is on). */
  flushed(): Promise<void> {
    // One promise per group: many PUBACKs of one turn wait on the same.
    this.group ??= new Promise((resolve) => {
      this.waiters.push(resolve)
      this.scheduleFlush()
    })
    return this.group
  }

  /** Up to `max` records not in memory yet, oldest first. */
  read(max: number): SpillRecord[] {
    this.writePending()
    const out: SpillRecord[] = []
    for (const segment of this.segments) {
      if (out.length >= max) break
      if (segment.read >= segment.records) continue
      const fd = openSync(segment.path, 'r')
      try {
        const header = Buffer.alloc(HEADER)
        while (out.length < max && segment.read < segment.records) {
          readSync(fd, header, 0, HEADER, segment.readOffset)
          const length = header.readUInt32BE(0)
          const body = Buffer.allocUnsafe(length)
          readSync(fd, body, 0, length, segment.readOffset + HEADER)
          segment.readOffset += HEADER + length
          segment.read++
          this.stats.unread--
          out.push({ body, pos: { seq: segment.seq, end: segment.readOffset } })
        }
      } finally {
        closeSync(fd)
      }
    }
    return out
  }

  /** The sink holds every record up to `pos`: move the cursor, delete the segments before it. */
  ack(pos: SpillPosition): void {
    while (this.segments.length > 1 && this.segments[0].seq < pos.seq) this.forgetAcked(this.segments.shift() as Segment)
    // A full segment wholly acknowledged goes too (the active one stays for appends).
    let cursor = { seq: pos.seq, offset: pos.end }
    const first = this.segments[0]
    if (this.segments.length > 1 && first.seq === pos.seq && pos.end >= first.size && first.read >= first.records) {
      this.forgetAcked(this.segments.shift() as Segment)
      cursor = { seq: this.segments[0].seq, offset: 0 }
    }
    if (this.closed) return
    writeFileSync(this.cursorPath, JSON.stringify(cursor))
  }

  private forgetAcked(segment: Segment): void {
    this.stats.bytes -= segment.size
    this.stats.unread -= segment.records - segment.read
    this.forget(segment)
  }

  /** Writes and fsyncs what is pending, closes the files. */
  async close(): Promise<void> {
    this.writePending()
    await this.syncing
    for (const s of this.segments) {
      if (s.fd === undefined) continue
      if (this.settings.fsync) await new Promise<void>((resolve) => fdatasync(s.fd as number, () => resolve()))
      closeSync(s.fd)
      s.fd = undefined
    }
    this.closed = true
    this.group = undefined
    for (const resolve of this.waiters.splice(0)) resolve()
  }
}
