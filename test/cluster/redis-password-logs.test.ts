import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { createLogger } from '../../broker/log.js'
import { FLEETMQ_BIN } from '../helpers/fleetmq.js'
import { redisCli, startRedis, stopRedis } from '../helpers/redis.js'
import { secretFile } from './nodes.js'

/*
 * ioredis attaches the arguments of a failed command to its error (`err.command.args`): a refused
 * AUTH carries the password, and pino's error serializer writes every property of an error. The
 * logs a node writes (journald keeps them, log shippers copy them) must never hold a Redis password.
 */

test('a node given a wrong Redis password logs the refusal, never the password', { timeout: 60_000 }, async () => {
  const redis = await startRedis()
  await redisCli(redis.port, 'CONFIG', 'SET', 'requirepass', 'the-right-redis-password-0123456789')
  const wrong = 'a-wrong-redis-password-that-must-not-be-logged'
  const child = spawn(process.execPath, [FLEETMQ_BIN, 'start', '--mqtt', '127.0.0.1:0', '--mgmt', '127.0.0.1:0', '--allow-anonymous',
    '--data-dir', mkdtempSync(join(tmpdir(), 'fleetmq-redis-auth-')), '--log-format', 'json', '--log-level', 'debug',
    '--redis', `redis://:${wrong}@127.0.0.1:${redis.port}`, '--cluster-secret-file', secretFile()], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d })
  child.stderr.on('data', (d: Buffer) => { output += d })
  const exited = once(child, 'exit')
  try {
    const deadline = Date.now() + 30_000
    // ioredis reports the refused AUTH (WRONGPASS) as a connection error: the node logs it at debug.
    while (!/WRONGPASS/.test(output) && child.exitCode === null && Date.now() < deadline) await sleep(100)
    assert.match(output, /WRONGPASS/, `the node did not log Redis' refusal:\n${output.slice(-3000)}`)
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM')
    await exited
    await stopRedis(redis)
  }
  assert.ok(!output.includes(wrong), `the Redis password is in the node's log output:\n${output.split('\n').filter((l) => l.includes(wrong)).join('\n')}`)
})

test('the logger drops what ioredis attaches to an error (the command and its arguments), also in a cause', () => {
  let written = ''
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { written += chunk; done() } })
  const log = createLogger({ level: 'info', format: 'json' }, sink)
  const refused = Object.assign(new Error('WRONGPASS invalid username-password pair'), { command: { name: 'auth', args: ['secret-in-args'] } })
  const wrapped = new Error('Redis did not answer', { cause: refused })
  log.warn({ err: refused }, 'refused')
  log.warn({ err: wrapped }, 'wrapped')
  log.warn({ error: refused, lastError: refused }, 'other keys')
  assert.ok(!written.includes('secret-in-args'), written)
  const lines = written.trim().split('\n').map((l) => JSON.parse(l) as { err?: { message: string; command?: unknown } })
  assert.equal(lines[0].err?.message, 'WRONGPASS invalid username-password pair')
  assert.deepEqual(lines[0].err?.command, { name: 'auth' }, 'the command name stays: it says what failed')
})
