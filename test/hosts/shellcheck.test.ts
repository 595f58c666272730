import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { test } from 'node:test'
import { REPO_ROOT } from '../helpers/hosts.js'

/** Every shell script under scripts/: *.sh files and files starting with a bash shebang. */
function shellScripts(dir: string): string[] {
  const found: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) found.push(...shellScripts(path))
    else if (entry.name.endsWith('.sh') || (statSync(path).size > 2 && /^#!.*\bbash\b/.test(readFileSync(path, 'utf8').split('\n')[0]))) found.push(path)
  }
  return found.sort()
}

test('every provisioning and helper script passes shellcheck at warning level', () => {
  const scripts = shellScripts(join(REPO_ROOT, 'scripts'))
  const names = scripts.map((s) => relative(REPO_ROOT, s))
  for (const required of ['scripts/provision/fleetmq-provision', 'scripts/provision/lib/common.sh', 'scripts/join-node',
    ...['install', 'configure', 'join', 'leave', 'upgrade', 'cleanup', 'validate'].map((p) => `scripts/provision/phases/${p}.sh`)]) {
    assert.ok(names.includes(required), `${required} exists and is checked`)
  }
  // -x follows `source` lines; run from each script's folder so that relative sources resolve.
  const failures: string[] = []
  for (const script of scripts) {
    const result = spawnSync('shellcheck', ['-S', 'warning', '-x', script], { cwd: join(script, '..'), encoding: 'utf8' })
    assert.notEqual(result.error?.message.includes('ENOENT'), true, 'shellcheck is installed (npm run setup)')
    if (result.status !== 0) failures.push(`${relative(REPO_ROOT, script)}:\n${result.stdout}${result.stderr}`)
  }
  assert.deepEqual(failures, [], failures.join('\n'))
})

test('provisioning scripts are strict: set -Eeuo pipefail in the entry point, no phase runs unchecked', () => {
  const entry = readFileSync(join(REPO_ROOT, 'scripts/provision/fleetmq-provision'), 'utf8')
  assert.match(entry, /^#!\/usr\/bin\/env bash\n/)
  assert.match(entry, /^set -Eeuo pipefail$/m)
  const result = spawnSync('bash', [join(REPO_ROOT, 'scripts/provision/fleetmq-provision'), 'explode'], { encoding: 'utf8' })
  assert.equal(result.status, 1)
  assert.match(result.stderr, /unknown phase 'explode'; use one of: install configure join leave upgrade cleanup validate/)
})
