import { test } from 'node:test'
import assert from 'node:assert/strict'
import pino from 'pino'
import { startMgmtServer } from '../../broker/mgmt/http.js'
import { HashQueueFull } from '../../broker/auth/password.js'

/*
 * A management request that finds the node busy (more password checks waiting than the cap, as a
 * flood of Basic-authenticated requests makes) is a 503 with Retry-After and a warning, not a 500
 * and an error: found by the fuzz harness.
 */

test('a busy node answers 503 with Retry-After and logs a warning, never an error', async () => {
  const lines: Array<{ level: number; msg: string }> = []
  const log = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line) as { level: number; msg: string }) } })
  const server = await startMgmtServer({
    host: '127.0.0.1',
    port: 0,
    log,
    routes: [{ method: 'GET', path: '/busy', handle: () => { throw new HashQueueFull() } }],
    authorize: () => ({ kind: 'token', name: 'test', role: 'admin' }),
  })
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/busy`)
    assert.equal(res.status, 503)
    assert.equal(res.headers.get('retry-after'), '1')
    assert.match(((await res.json()) as { error: string }).error, /password checks are already waiting/)
    assert.equal(lines.filter((l) => l.level >= 50).length, 0, 'no error-level line')
    assert.ok(lines.some((l) => l.level === 40 && /answered 503/.test(l.msg)))
  } finally {
    await server.close()
  }
})
