import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, startFleetmq } from '../helpers/fleetmq.js'
import { secretFile } from './nodes.js'

/*
 * A node started while its Redis does not answer: it gives up with an error that names Redis and
 * the fix (systemd starts it again), and a stop signal meanwhile ends it at once.
 */

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

test('a node whose Redis does not answer at start exits 1 naming Redis (without its password) and the fix', { timeout: 90_000 }, async () => {
  const port = await closedPort()
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-redis-start-'))
  const result = await runCli(['start', '--mqtt', '127.0.0.1:0', '--mgmt', '127.0.0.1:0', '--allow-anonymous', '--data-dir', dir,
    '--log-format', 'json', '--redis', `redis://fleet:hunter2-secret@127.0.0.1:${port}`, '--cluster-secret-file', secretFile()])
  assert.equal(result.code, 1)
  const cause = result.stderr.trim().split('\n').at(-1) ?? ''
  assert.match(cause, new RegExp(`^fleetmq: Redis at redis://127\\.0\\.0\\.1:${port} did not answer while the node started .*start Redis or correct cluster\\.redis`))
  assert.doesNotMatch(result.stderr, /hunter2-secret/)
})

test('SIGTERM while the node waits for Redis, before any listener is open, exits 0 at once', { timeout: 60_000 }, async () => {
  const port = await closedPort()
  let signalled: number | undefined
  let exited: Promise<unknown[]> | undefined
  const starting = await startFleetmq({
    args: ['--allow-anonymous', '--redis', `redis://127.0.0.1:${port}`, '--cluster-secret-file', secretFile()],
    onLog: (line, child) => {
      // The first wait for Redis at start: the cluster's user store (then the backend).
      if (/^(reading the user store|state in Redis at)/.test(line.msg) && exited === undefined) {
        exited = once(child, 'exit')
        signalled = Date.now()
        child.kill('SIGTERM')
      }
    },
  }).catch((err: Error) => err)
  assert.ok(starting instanceof Error, 'the node never became ready')
  assert.ok(exited && signalled, 'the backend was being set up')
  const [code, signal] = await exited
  assert.equal(signal, null, 'not killed by the signal')
  assert.equal(code, 0)
  assert.ok(Date.now() - signalled < 5_000, `exited ${Date.now() - signalled} ms after SIGTERM`)
  assert.match(starting.message, /SIGTERM: stopped before any listener opened/)
})
