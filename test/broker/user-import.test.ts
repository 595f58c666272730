import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { parseCsv, parseImport } from '../../broker/auth/user-import.js'
import { runCli, startFleetmq } from '../helpers/fleetmq.js'
import { isFleetmqError } from '../../broker/errors.js'

test('CSV follows RFC 4180: quoted commas, doubled quotes, line breaks in quotes, CRLF', () => {
  assert.deepEqual(parseCsv('username,password\r\n"a,b","p""q"\r\nc,"x\ny"\n'), [['username', 'password'], ['a,b', 'p"q'], ['c', 'x\ny']])
})

test('an import file with bad records imports nothing and names each problem with its line', () => {
  const csv = 'username,password,admin\nok-1,long-enough-password-xyz,false\nbad user,pw,no\nok-1,again-password-0000000,no\nshort,tiny,maybe\n'
  assert.throws(() => parseImport(csv, 'csv', 1024), (err: unknown) => {
    assert.ok(isFleetmqError(err))
    assert.match(err.message, /^3 of 4 users cannot be imported; fix them and import again \(nothing was imported\)/)
    assert.match(err.details.join('\n'), /line 3: "bad user" holds a character/)
    assert.match(err.details.join('\n'), /line 4: "ok-1" appears more than once/)
    assert.match(err.details.join('\n'), /line 5: "short": the password has fewer than 20 characters, too few for --hash-cost 1024/)
    return true
  })
  assert.throws(() => parseImport('name,pw\nx,y\n', 'csv', 32768), /the CSV header is "name,pw"; it must name the columns username, password or hash/)
})

test('fleetmq user import: plain passwords at --hash-cost 1024 and pre-hashed users; existing users are never overwritten', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-import-'))
  const broker = await startFleetmq({ dataDir: dir, users: [{ username: 'dev-0', password: 'an-existing-password' }] })
  try {
    const count = 2_000
    const rows = Array.from({ length: count }, (_, i) => `dev-${i},device-credential-${String(i).padStart(6, '0')}-abcdef,${i === 1 ? 'true' : 'false'}`)
    const file = join(dir, 'fleet.csv')
    writeFileSync(file, `username,password,admin\n${rows.join('\n')}\n`)
    const started = Date.now()
    const result = await runCli(['user', 'import', file, '--hash-cost', '1024', '--data-dir', dir, '--json'])
    assert.equal(result.code, 0, result.stderr)
    const report = JSON.parse(result.stdout) as { added: number; conflicts: string[]; hashed: number }
    assert.deepEqual([report.added, report.conflicts, report.hashed], [count - 1, ['dev-0'], count])
    process.stderr.write(`# ${count} plain passwords imported at scrypt N=1024 in ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    const stored = (JSON.parse(readFileSync(join(dir, 'users.json'), 'utf8')) as { users: { username: string; hash: string; roles: string[] }[] }).users
    assert.match(stored.find((u) => u.username === 'dev-7')?.hash ?? '', /^scrypt\$1024\$8\$1\$/)
    assert.deepEqual(stored.find((u) => u.username === 'dev-1')?.roles, ['admin'])
    // The running node applies the import without SIGHUP; dev-0 keeps its password.
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { username: 'dev-1999', password: 'device-credential-001999-abcdef', reconnectPeriod: 0 })
    await client.endAsync()
    const first = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.ports.mqtt}`, { username: 'dev-0', password: 'an-existing-password', reconnectPeriod: 0 })
    await first.endAsync()
  } finally {
    await broker.stop()
  }
})
