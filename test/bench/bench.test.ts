import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'

/*
 * `npm run bench --quick` end to end: real mosquitto, the real fleetmq process, the real load
 * generator. Speed targets are never asserted here (the machine is shared); what is asserted is
 * that the harness measured what it claims: every scenario has a positive number for both
 * brokers, and every message the generator published reached every subscriber due to get it.
 */

const REPO = resolve(import.meta.dirname, '../..')

interface BenchJson {
  brokers: { id: string }[]
  rows: { metric: string; medians: Record<string, number>; ratios: Record<string, number> }[]
  runs: { scenario: string; broker: string; expected: number; received: number; metrics: Record<string, number> }[]
}

async function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d })
  child.stderr.on('data', (d: Buffer) => { stderr += d })
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, stdout, stderr }
}

test('bench --quick measures every scenario on mosquitto and FleetMQ without losing a message', { timeout: 180_000 }, async () => {
  const { code, stdout, stderr } = await runBench(['--quick', '--json'])
  assert.equal(code, 0, stderr)
  const result = JSON.parse(stdout) as BenchJson
  assert.deepEqual(result.brokers.map((b) => b.id), ['mosquitto', 'fleetmq'])
  assert.deepEqual(result.rows.map((r) => r.metric), ['fanin_qos0', 'fanin_qos1', 'fanout_qos0', 'latency_p50', 'latency_p99', 'idle_memory'])
  for (const row of result.rows) {
    for (const broker of ['mosquitto', 'fleetmq']) {
      assert.ok(row.medians[broker] > 0, `${row.metric} on ${broker}: ${row.medians[broker]}`)
    }
    assert.ok(Number.isFinite(row.ratios.fleetmq) && row.ratios.fleetmq > 0, `${row.metric} ratio: ${row.ratios.fleetmq}`)
  }
  assert.equal(result.runs.length, 10)
  for (const run of result.runs) {
    assert.ok(run.expected > 0, `${run.scenario} on ${run.broker} expected nothing`)
    assert.equal(run.received, run.expected, `${run.scenario} on ${run.broker}: received ${run.received} of ${run.expected}`)
  }
})

test('bench rejects an unknown scenario, naming the ones it knows', async () => {
  const { code, stderr } = await runBench(['--only', 'fanin_qos2'])
  assert.equal(code, 2)
  assert.match(stderr, /--only: unknown "fanin_qos2"; choose from fanin_qos0, fanin_qos1, fanout_qos0, latency, idle-memory/)
})
