/*
 * The program itself fails on bad config before planning any resource. Each case plans the
 * program in a child process (the program is imported once per process).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { promisify } from 'node:util'
import { REPO_ROOT } from './harness.js'

const run = promisify(execFile)

async function plan(config: Record<string, string>, mocks: object = {}): Promise<{ error?: string; resources: number }> {
  const args = ['--import', 'tsx', join(REPO_ROOT, 'test/infra/plan-variant.ts')]
  const env = { ...process.env, FLEETMQ_TEST_CONFIG: JSON.stringify(config), FLEETMQ_TEST_MOCKS: JSON.stringify(mocks) }
  // The Pulumi SDK exits 1 when a failed program leaves promises behind; the verdict is the JSON line.
  const stdout = await run(process.execPath, args, { cwd: REPO_ROOT, env }).then(
    (result) => result.stdout,
    (err: { stdout?: string }) => err.stdout ?? '',
  )
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}')
}

describe('the program refuses bad config', { concurrency: true }, () => {
  test('bad values: every key named, nothing planned', async () => {
  const result = await plan({ adminCidr: '0.0.0.0/0', nodeCount: 'three', redis: 'memcached' })
  assert.equal(result.resources, 0)
  assert.match(result.error ?? '', /adminCidr: must not be the whole internet/)
  assert.match(result.error ?? '', /nodeCount: "three" is not allowed; use a whole number from 1 to 20/)
  assert.match(result.error ?? '', /redis: "memcached" is not allowed; use one of colocated, elasticache/)
})

  test('a missing bundle names npm run bundle, nothing planned', async () => {
  const result = await plan({ adminCidr: '203.0.113.7/32', bundlePath: '/nonexistent/fleetmq-9.9.9-linux-x64.tar.gz' })
  assert.equal(result.resources, 0)
  assert.match(result.error ?? '', /bundlePath: \/nonexistent\/fleetmq-9\.9\.9-linux-x64\.tar\.gz does not exist; run npm run bundle first/)
})

  test('an AMI of the wrong architecture for instanceType, nothing planned', async () => {
  const result = await plan({ adminCidr: '203.0.113.7/32', instanceType: 'm7g.large', ami: 'ami-0123456789abcdef0' }, { customAmiArchitecture: 'x86_64' })
  assert.equal(result.resources, 0)
  assert.match(result.error ?? '', /ami: ami-0123456789abcdef0 is built for x86_64 but instanceType m7g\.large is arm64/)
})

  test('more AZs than the region has, nothing planned', async () => {
  const result = await plan({ adminCidr: '203.0.113.7/32', azCount: '3' }, { zones: ['eu-west-1a', 'eu-west-1b'] })
  assert.equal(result.resources, 0)
  assert.match(result.error ?? '', /azCount: 3 is more than the 2 availability zones eu-west-1 offers/)
})
})
