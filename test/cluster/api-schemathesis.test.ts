import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { clusterOnRedis, connect, tokenOf } from './nodes.js'

/*
 * The API and its OpenAPI document agree: Schemathesis (a property-based API tester, from PyPI,
 * installed by `npm run setup` into .cache/schemathesis) generates requests for every operation
 * from the document served by a clustered node — valid ones and, for each constraint, invalid
 * ones — and fails the test on any 5xx, a status code or content type the document does not list,
 * a body that does not match the response schema, invalid input accepted, an operation that
 * answers without credentials (ignored_auth), or a method the document does not define answered
 * other than 405. The node must still be up afterwards and have logged no error.
 *
 * Bounded: SCHEMATHESIS_EXAMPLES (default 8) cases per operation and phase: 25–50 s on a 2-core
 * machine with a load average of 11–14, over 100 s when two QEMU guests load it to 18.
 * SCHEMATHESIS_SEED repeats a run (each run prints its seed).
 */

const TESTER = resolve(import.meta.dirname, '../../.cache/schemathesis/bin/schemathesis')
const EXAMPLES = process.env.SCHEMATHESIS_EXAMPLES ?? '8'
const SEED = process.env.SCHEMATHESIS_SEED ?? String(Math.floor(Math.random() * 2 ** 31))
/** A safety net for a stuck run, not the budget (the number of examples is): a loaded machine is slower. */
const RUN_TIMEOUT_MS = 300_000

const nodes = clusterOnRedis(2)

function run(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolvePromise) => {
    // In a folder of its own: Schemathesis keeps a cache of findings in its working folder.
    const cwd = mkdtempSync(join(tmpdir(), 'fleetmq-schemathesis-'))
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d })
    child.stderr.on('data', (d: Buffer) => { output += d })
    const timer = setTimeout(() => child.kill('SIGTERM'), RUN_TIMEOUT_MS)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolvePromise({ code, output })
    })
  })
}

test('Schemathesis finds no server error, no undocumented answer and no accepted invalid input in the management API', async (t) => {
  assert.ok(existsSync(TESTER), `Schemathesis is not installed at ${TESTER}: run npm run setup`)
  const [node, other] = nodes
  // Something in every list, so that the answers checked against the response schemas have items.
  const device = await connect(other, { clientId: 'schemathesis-device', protocolVersion: 5 })
  await device.subscribeAsync('fleet/+/status', { qos: 1 })
  await device.publishAsync('fleet/one/status', 'online', { retain: true, qos: 1 })
  const headers = { ...tokenOf(node), 'content-type': 'application/json' }
  const base = `http://127.0.0.1:${node.mgmtPort}`
  await fetch(`${base}/api/v1/apikeys`, { method: 'POST', headers, body: JSON.stringify({ name: 'listed', role: 'viewer' }) })
  await fetch(`${base}/api/v1/banned`, { method: 'POST', headers, body: JSON.stringify({ kind: 'username', value: 'listed', duration: 3600 }) })

  const started = Date.now()
  const { code, output } = await run(TESTER, [
    'run', `${base}/api/v1/openapi.json`,
    '--header', `Authorization: ${tokenOf(node).authorization}`,
    '--max-examples', EXAMPLES,
    '--seed', SEED,
    '--phases', 'examples,coverage,fuzzing',
    '--checks', 'not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method',
    '--workers', '2',
    '--generation-database', 'none',
    '--output-truncate', 'true',
    '--no-color',
  ])
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  const summary = output.split('\n').filter((line) => line.trim() !== '').slice(-40).join('\n')
  t.diagnostic(`schemathesis seed ${SEED}, ${EXAMPLES} examples per operation, ${seconds} s, load average ${loadavg()[0].toFixed(1)}`)
  assert.notEqual(code, null, `Schemathesis did not finish within ${RUN_TIMEOUT_MS / 1000} s (load average ${loadavg()[0].toFixed(1)}):\n${summary}`)
  assert.equal(code, 0, `Schemathesis found problems (seed ${SEED}; repeat with SCHEMATHESIS_SEED=${SEED}):\n${summary}`)
  assert.match(output, /Test cases:\s+\d+ generated, \d+ passed/)

  assert.equal(node.process.exitCode, null, 'the node is still running')
  assert.equal((await fetch(`${base}/healthz`)).status, 200)
  const errors = node.logs.filter((line) => line.level >= 50)
  assert.deepEqual(errors.map((line) => line.msg), [], 'the node logged no error')
  device.end(true)
})
