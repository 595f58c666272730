import assert from 'node:assert/strict'
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../broker/log.js'
import { ActionQueue, type Sink } from '../../broker/rules/queue.js'
import { SpillLog } from '../../broker/rules/spill.js'

/*
 * The spill log of an action (broker/rules/spill.ts) on a real file system, and the queue that
 * spills to it: write and replay in order, a torn or corrupt tail skipped with a warning, the disk
 * bound dropping the oldest segment and counting it, a restart sending what was not acknowledged.
 */

const quiet = createLogger({ level: 'silent', format: 'json' })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const made: string[] = []
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-spill-'))
  made.push(dir)
  return dir
}
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})
const body = (i: number) => Buffer.from(JSON.stringify({ i, pad: 'x'.repeat(40) }))
const indexOf = (b: Buffer) => (JSON.parse(b.toString()) as { i: number }).i

/** A logger that keeps its warnings. */
function recordingLog(): { log: ReturnType<typeof createLogger>; warnings: string[] } {
  const warnings: string[] = []
  const log = createLogger({ level: 'silent', format: 'json' })
  const original = log.warn.bind(log)
  log.warn = ((obj: unknown, msg?: string) => {
    warnings.push(typeof obj === 'string' ? obj : msg ?? '')
    return original(obj as object, msg as string)
  }) as typeof log.warn
  return { log, warnings }
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(5)
  }
}

describe('the spill log', () => {
  it('replays what was written, in order, after a reopen, and not what was acknowledged', async () => {
    const dir = tempDir()
    const log = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: true, segmentBytes: 1024 }, quiet, 't')
    const positions = []
    for (let i = 0; i < 100; i++) positions.push(log.append(body(i), false).pos)
    await log.flushed()
    assert.ok(readdirSync(dir).filter((f) => f.endsWith('.log')).length > 3, 'several segments were written')
    const first = log.read(30)
    assert.deepEqual(first.map((r) => indexOf(r.body)), Array.from({ length: 30 }, (_, i) => i))
    log.ack(first[29].pos)
    await log.close()
    // No close at all is the kill -9 case: the reopen must not depend on it.
    const again = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: true, segmentBytes: 1024 }, quiet, 't')
    assert.equal(again.stats.unread, 70)
    const rest = again.read(1000)
    assert.deepEqual(rest.map((r) => indexOf(r.body)), Array.from({ length: 70 }, (_, i) => i + 30))
    // Appends continue after the replayed records, and replay again after another reopen.
    again.append(body(100), false)
    await again.flushed()
    const third = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: true, segmentBytes: 1024 }, quiet, 't')
    assert.deepEqual(third.read(1000).map((r) => indexOf(r.body)), Array.from({ length: 71 }, (_, i) => i + 30))
  })

  it('skips a torn tail with a warning, truncates it and appends after it, never throwing', async () => {
    const dir = tempDir()
    const log = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: false }, quiet, 't')
    for (let i = 0; i < 10; i++) log.append(body(i), false)
    await log.flushed()
    const segment = join(dir, readdirSync(dir).find((f) => f.endsWith('.log')) as string)
    const size = statSync(segment).size
    truncateSync(segment, size - 5)
    const { log: logger, warnings } = recordingLog()
    const reopened = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: false }, logger, 't')
    assert.equal(reopened.stats.unread, 9, 'the torn last record is skipped')
    assert.match(warnings.join('\n'), /a truncated record at byte \d+; skipping/)
    reopened.append(body(10), false)
    await reopened.flushed()
    const after = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: false }, quiet, 't')
    assert.deepEqual(after.read(100).map((r) => indexOf(r.body)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 10])
  })

  it('skips a record whose CRC does not match, and garbage after the last record', async () => {
    const dir = tempDir()
    const log = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: false }, quiet, 't')
    for (let i = 0; i < 5; i++) log.append(body(i), false)
    await log.flushed()
    const segment = join(dir, readdirSync(dir).find((f) => f.endsWith('.log')) as string)
    const data = readFileSync(segment)
    const recordSize = data.length / 5
    data[recordSize * 3 + 12] ^= 0xff // a flipped byte in the 4th record's body
    writeFileSync(segment, data)
    const { log: logger, warnings } = recordingLog()
    const reopened = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: false }, logger, 't')
    assert.deepEqual(reopened.read(100).map((r) => indexOf(r.body)), [0, 1, 2])
    assert.match(warnings.join('\n'), /a record whose CRC does not match/)

    const dir2 = tempDir()
    const log2 = new SpillLog(dir2, { maxDiskBytes: 1 << 20, fsync: false }, quiet, 't')
    log2.append(body(0), false)
    await log2.flushed()
    appendFileSync(join(dir2, readdirSync(dir2).find((f) => f.endsWith('.log')) as string), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]))
    const { log: logger2, warnings: warnings2 } = recordingLog()
    const reopened2 = new SpillLog(dir2, { maxDiskBytes: 1 << 20, fsync: false }, logger2, 't')
    assert.deepEqual(reopened2.read(100).map((r) => indexOf(r.body)), [0])
    assert.match(warnings2.join('\n'), /an impossible record length/)
  })

  it('keeps its disk bound by dropping the oldest segment, and says how many records went', async () => {
    const dir = tempDir()
    const maxDiskBytes = 64 * 1024
    const log = new SpillLog(dir, { maxDiskBytes, fsync: false }, quiet, 't')
    let dropped = 0
    for (let i = 0; i < 5_000; i++) dropped += log.append(body(i), false).droppedUnread
    await log.flushed()
    const onDisk = readdirSync(dir).filter((f) => f.endsWith('.log')).reduce((sum, f) => sum + statSync(join(dir, f)).size, 0)
    assert.ok(onDisk <= maxDiskBytes, `${onDisk} bytes on disk, bound ${maxDiskBytes}`)
    const kept = log.read(10_000).map((r) => indexOf(r.body))
    assert.equal(kept.length + dropped, 5_000, 'every record is either kept or counted as dropped')
    assert.equal(kept[kept.length - 1], 4_999, 'the newest is kept')
    assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => 5_000 - kept.length + i), 'the oldest went, the rest in order')
  })
})

describe('an action queue with a spill log', () => {
  const settings = { maxQueued: 10, maxBatch: 4, initialBackoffMs: 5, maxBackoffMs: 20 }

  it('spills past maxQueued, delivers everything in order, and a restart sends what the sink had not acknowledged', async () => {
    const dir = tempDir()
    let up = false
    const received: number[] = []
    const sink: Sink<number> = {
      async send(batch) {
        if (!up) throw new Error('sink down')
        received.push(...batch)
      },
      close: async () => {},
    }
    const log = new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: true }, quiet, 't')
    const queue = new ActionQueue('t', sink, settings, quiet, () => {}, log)
    for (let i = 0; i < 500; i++) queue.push(i)
    await queue.persisted()
    assert.equal(queue.stats.queued, 500)
    assert.equal(log.stats.unread, 490, 'past maxQueued the messages are on disk only')
    // The node dies (no close); a new one on the same folder sends all 500.
    const received2: number[] = []
    const sink2: Sink<number> = { async send(batch) { received2.push(...batch) }, close: async () => {} }
    const queue2 = new ActionQueue('t', sink2,
      settings, quiet, () => {}, new SpillLog(dir, { maxDiskBytes: 1 << 20, fsync: true }, quiet, 't'))
    await until(() => received2.length === 500)
    assert.deepEqual(received2, Array.from({ length: 500 }, (_, i) => i))
    await queue2.close(100)
    up = true
    await queue.close(10)
    assert.equal(queue.stats.dropped, 0)
  })

  it('counts what the disk bound dropped as disk_full', async () => {
    const dir = tempDir()
    const sink: Sink<string> = { send: () => new Promise(() => {}), close: async () => {} }
    const queue = new ActionQueue('t', sink, settings, quiet, () => {}, new SpillLog(dir, { maxDiskBytes: 64 * 1024, fsync: false }, quiet, 't'))
    for (let i = 0; i < 5_000; i++) queue.push(`message ${i} ${'x'.repeat(50)}`)
    assert.ok(queue.stats.droppedBy.disk_full > 3_000, `${queue.stats.droppedBy.disk_full} dropped`)
    assert.equal(queue.stats.dropped, queue.stats.droppedBy.disk_full)
    await queue.close(10)
  })
})
