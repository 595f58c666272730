import { test } from 'node:test'
import assert from 'node:assert/strict'
import { HashQueueFull, MAX_CONCURRENT_HASHES, MAX_WAITING_HASHES, hashPassword, verifyPassword } from '../../broker/auth/password.js'

// Cheap parameters (1 MiB): this is about the queue in front of scrypt, not its cost.
const CHEAP = { N: 1_024, r: 8, p: 1 }

test('password checks beyond the running and waiting caps are refused at once as busy; the rest complete', { timeout: 60_000 }, async () => {
  const stored = await hashPassword('right', CHEAP)
  const total = MAX_CONCURRENT_HASHES + MAX_WAITING_HASHES + 3
  const started = Date.now()
  const results = await Promise.allSettled(Array.from({ length: total }, (_, i) => verifyPassword(i % 2 ? 'right' : 'wrong', stored)))
  const refused = results.filter((r) => r.status === 'rejected')
  assert.equal(refused.length, 3, `the ${total - MAX_CONCURRENT_HASHES - MAX_WAITING_HASHES} checks over the caps are refused`)
  for (const r of refused) {
    const err = (r as PromiseRejectedResult).reason as Error & { statusCode?: number }
    assert.ok(err instanceof HashQueueFull)
    assert.equal(err.statusCode, 503)
    assert.match(err.message, /1000 password checks are already waiting/)
  }
  // The ones admitted were checked, right and wrong told apart.
  const answers = results.flatMap((r, i) => (r.status === 'fulfilled' ? [[i % 2 === 1, r.value]] : []))
  assert.equal(answers.length, MAX_CONCURRENT_HASHES + MAX_WAITING_HASHES)
  assert.ok(answers.every(([expected, got]) => expected === got))
  // The refused were the last asked: the queue is first come, first served.
  assert.deepEqual(results.map((r, i) => [r.status, i]).filter(([s]) => s === 'rejected').map(([, i]) => i), [total - 3, total - 2, total - 1])

  // The queue drained: a check now runs.
  assert.equal(await verifyPassword('right', stored), true)
  console.log(`# ${total} checks at once: ${MAX_CONCURRENT_HASHES + MAX_WAITING_HASHES} done, 3 refused, ${Date.now() - started} ms`)
})
