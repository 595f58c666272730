import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { FLEETMQ_BIN, runCli, startFleetmq } from '../helpers/fleetmq.js'
import { verifyPassword } from '../../broker/auth/password.js'

const tempDir = (): string => mkdtempSync(join(tmpdir(), 'fleetmq-user-cli-'))

interface StoreFile {
  version: number
  users: { username: string; hash: string; roles: string[]; created: string }[]
}
const readStore = (file: string): StoreFile => JSON.parse(readFileSync(file, 'utf8')) as StoreFile

test('user add writes users.json with mode 0600 and a salted scrypt hash, never the password', async () => {
  const dir = tempDir()
  const added = await runCli(['user', 'add', 'alice', '--admin', '--password-stdin', '--data-dir', dir], {}, 'correct horse battery\n')
  assert.equal(added.code, 0, added.stderr)
  assert.match(added.stdout, /added admin user alice to .*users\.json; running nodes apply it within seconds/)
  assert.equal((await runCli(['user', 'add', 'bob', '--password-stdin', '--data-dir', dir], {}, 'correct horse battery\n')).code, 0)

  const file = join(dir, 'users.json')
  assert.equal(statSync(file).mode & 0o777, 0o600)
  const text = readFileSync(file, 'utf8')
  assert.ok(!text.includes('correct horse battery'))
  const store = readStore(file)
  assert.deepEqual(store.users.map((u) => [u.username, u.roles]), [['alice', ['admin']], ['bob', []]])
  for (const user of store.users) assert.match(user.hash, /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/)
  // The same password gives different hashes (per-user salt), and each verifies.
  assert.notEqual(store.users[0].hash, store.users[1].hash)
  assert.ok(await verifyPassword('correct horse battery', store.users[0].hash))
  assert.ok(!(await verifyPassword('correct horse batterY', store.users[0].hash)))
})

test('user list prints users and roles, as a table or --json, without hashes', async () => {
  const dir = tempDir()
  await runCli(['user', 'add', 'alice', '--admin', '--password-stdin', '--data-dir', dir], {}, 'alice-secret-1\n')
  const table = await runCli(['user', 'list', '--data-dir', dir])
  assert.equal(table.code, 0)
  assert.match(table.stdout, /^USERNAME\s+ROLES\s+CREATED\nalice\s+admin\s+\d{4}-\d\d-\d\dT/)
  const json = await runCli(['user', 'list', '--json', '--data-dir', dir])
  const data = JSON.parse(json.stdout) as { file: string; users: Record<string, unknown>[] }
  assert.equal(data.file, join(dir, 'users.json'))
  assert.deepEqual(Object.keys(data.users[0]).sort(), ['created', 'roles', 'username'])
  const empty = await runCli(['user', 'list', '--data-dir', tempDir()])
  assert.match(empty.stdout, /no users in .*; add one with fleetmq user add NAME/)
})

test('passwd and remove change the store; mistakes get clear errors and exit 1', async () => {
  const dir = tempDir()
  const file = join(dir, 'users.json')
  await runCli(['user', 'add', 'alice', '--password-stdin', '--data-dir', dir], {}, 'alice-secret-1\n')

  const exists = await runCli(['user', 'add', 'alice', '--password-stdin', '--data-dir', dir], {}, 'another-secret\n')
  assert.equal(exists.code, 1)
  assert.match(exists.stderr, /user "alice" already exists in .*users\.json; change the password with fleetmq user passwd alice \[FLEETMQ_ERR_USER_EXISTS\]/)

  const passwordFile = join(dir, 'new-password')
  writeFileSync(passwordFile, 'alice-secret-2\n')
  assert.equal((await runCli(['user', 'passwd', 'alice', '--password-file', passwordFile, '--data-dir', dir])).code, 0)
  assert.ok(await verifyPassword('alice-secret-2', readStore(file).users[0].hash))

  for (const args of [['passwd', 'carol', '--password-stdin'], ['remove', 'carol']]) {
    const unknown = await runCli(['user', ...args, '--data-dir', dir], {}, 'carol-secret-1\n')
    assert.equal(unknown.code, 1)
    assert.match(unknown.stderr, /no user "carol" in .*; fleetmq user list shows the users \[FLEETMQ_ERR_USER_UNKNOWN\]/)
  }
  const [short, badName, both, missingFile] = await Promise.all([
    runCli(['user', 'add', 'dave', '--password-stdin', '--data-dir', dir], {}, 'short\n'),
    runCli(['user', 'add', 'da:ve', '--password-stdin', '--data-dir', dir], {}, 'dave-secret-1\n'),
    runCli(['user', 'add', 'dave', '--password-stdin', '--password-file', passwordFile, '--data-dir', dir], {}, 'x\n'),
    runCli(['user', 'add', 'dave', '--password-file', join(dir, 'nope'), '--data-dir', dir]),
  ])
  assert.match(short.stderr, /shorter than 8 characters; no change was made/)
  assert.match(badName.stderr, /"da:ve" holds a character that usernames cannot have/)
  assert.match(both.stderr, /--password-file and --password-stdin exclude each other/)
  assert.match(missingFile.stderr, /cannot read --password-file .*nope \(ENOENT\)/)
  assert.deepEqual([short, badName, both, missingFile].map((r) => r.code), [1, 1, 1, 1])

  assert.equal((await runCli(['user', 'remove', 'alice', '--data-dir', dir])).code, 0)
  assert.deepEqual(readStore(file).users, [])
})

test('an unreadable or corrupt store is reported with its path and the fix', async () => {
  const dir = tempDir()
  const file = join(dir, 'users.json')
  writeFileSync(file, '{ "version": 1, "users": [')
  const corrupt = await runCli(['user', 'list', '--data-dir', dir])
  assert.equal(corrupt.code, 1)
  assert.match(corrupt.stderr, new RegExp(`the user store ${file} is not valid JSON .*restore it from a backup.*\\[FLEETMQ_ERR_USER_STORE\\]`))
  const json = await runCli(['user', 'list', '--json', '--data-dir', dir])
  assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, 'FLEETMQ_ERR_USER_STORE')

  writeFileSync(file, JSON.stringify({ version: 1, users: [{ username: 'x', hash: 'plain-text', roles: [], created: 'now' }] }))
  const badHash = await runCli(['user', 'list', '--data-dir', dir])
  assert.match(badHash.stderr, /user "x": the password hash is invalid .*fleetmq user passwd x/)

  // A broker refuses to start on it, naming the file.
  const start = await runCli(['start', '--data-dir', dir, '--mqtt', '127.0.0.1:0', '--mgmt', '127.0.0.1:0', '--log-format', 'json'])
  assert.equal(start.code, 1)
  assert.match(start.stderr, new RegExp(`the user store ${file} has invalid entries`))

  // Loose permissions are accepted by the CLI but a node warns about them.
  writeFileSync(file, JSON.stringify({ version: 1, users: [] }))
  chmodSync(file, 0o644)
  assert.equal((await runCli(['user', 'list', '--data-dir', dir])).code, 0)
  const broker = await startFleetmq({ dataDir: dir })
  try {
    assert.ok(broker.logs.some((l) => l.level === 40 && new RegExp(`${file} is readable by other users \\(mode 0644\\); run chmod 600`).test(l.msg)))
  } finally {
    await broker.stop()
  }
})

test('the store is found like start finds it: --users-file, else usersFile or dataDir from --config and FLEETMQ_* variables', async () => {
  const dir = tempDir()
  const configFile = join(dir, 'fleetmq.yaml')
  writeFileSync(configFile, `usersFile: ${join(dir, 'from-config.json')}\n`)
  await Promise.all([
    runCli(['user', 'add', 'a-config', '--password-stdin', '--config', configFile], {}, 'password-1\n'),
    runCli(['user', 'add', 'b-env', '--password-stdin'], { FLEETMQ_DATA_DIR: join(dir, 'env-data') }, 'password-1\n'),
    runCli(['user', 'add', 'c-flag', '--password-stdin', '--users-file', join(dir, 'explicit.json'), '--config', configFile], {}, 'password-1\n'),
  ])
  assert.deepEqual(readStore(join(dir, 'from-config.json')).users.map((u) => u.username), ['a-config'])
  assert.deepEqual(readStore(join(dir, 'env-data', 'users.json')).users.map((u) => u.username), ['b-env'])
  assert.deepEqual(readStore(join(dir, 'explicit.json')).users.map((u) => u.username), ['c-flag'])
})

test('concurrent user add commands do not lose each other\'s users (lock file)', async () => {
  const dir = tempDir()
  const names = ['u1', 'u2', 'u3', 'u4']
  const results = await Promise.all(names.map((n) => runCli(['user', 'add', n, '--password-stdin', '--data-dir', dir], {}, 'same-password\n')))
  assert.deepEqual(results.map((r) => r.code), [0, 0, 0, 0])
  assert.deepEqual(readStore(join(dir, 'users.json')).users.map((u) => u.username).sort(), names)
})

test('on a terminal the password is prompted for twice without echo', async () => {
  const dir = tempDir()
  // `script` gives the command a pseudo-terminal; what the terminal shows comes back on stdout.
  const command = `${process.execPath} ${FLEETMQ_BIN} user add erin --data-dir ${dir}`
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let screen = ''
  const waitFor = (pattern: RegExp): Promise<void> => new Promise((resolve) => {
    const check = (): void => {
      if (pattern.test(screen)) {
        child.stdout.off('data', onData)
        resolve()
      }
    }
    const onData = (d: Buffer): void => { screen += d.toString(); check() }
    child.stdout.on('data', onData)
    check()
  })
  await waitFor(/Password for erin: $/)
  child.stdin.write('typed-secret-9\r')
  await waitFor(/Repeat the password: $/)
  child.stdin.write('typed-secret-9\r')
  const [code] = await once(child, 'exit')
  await new Promise((resolve) => setImmediate(resolve))
  screen += child.stdout.read()?.toString() ?? ''
  assert.equal(code, 0, screen)
  assert.ok(!screen.includes('typed-secret-9'), `the password was echoed:\n${screen}`)
  assert.ok(await verifyPassword('typed-secret-9', readStore(join(dir, 'users.json')).users[0].hash))
})

test('user add --password-hash stores a hash made elsewhere: the user connects with the original password', async () => {
  // The hash comes from another store, as an image's user-data or automation carries it.
  const elsewhere = tempDir()
  assert.equal((await runCli(['user', 'add', 'template', '--password-stdin', '--data-dir', elsewhere], {}, 'hashed-elsewhere-7\n')).code, 0)
  const hash = readStore(join(elsewhere, 'users.json')).users[0].hash

  const dir = tempDir()
  const added = await runCli(['user', 'add', 'frank', '--admin', '--password-hash', hash, '--data-dir', dir])
  assert.equal(added.code, 0, added.stderr)
  assert.match(added.stdout, /added admin user frank to .*users\.json/)
  assert.deepEqual(readStore(join(dir, 'users.json')).users.map((u) => [u.username, u.roles, u.hash]), [['frank', ['admin'], hash]])
  // passwd takes a hash too.
  assert.equal((await runCli(['user', 'add', 'gina', '--password-stdin', '--data-dir', dir], {}, 'gina-first-pass\n')).code, 0)
  const passwd = await runCli(['user', 'passwd', 'gina', '--password-hash', hash, '--data-dir', dir])
  assert.equal(passwd.code, 0, passwd.stderr)

  const broker = await startFleetmq({ dataDir: dir })
  try {
    const url = `mqtt://127.0.0.1:${broker.ports.mqtt}`
    for (const username of ['frank', 'gina']) {
      const client = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, username, password: 'hashed-elsewhere-7' })
      await client.endAsync()
    }
    // The hash itself is not a password. [MQTT-3.2.2-3]: refused with CONNACK return code 4.
    await assert.rejects(mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, username: 'frank', password: hash }),
      (err: Error & { code?: number }) => err.code === 4)
    await assert.rejects(mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, username: 'gina', password: 'gina-first-pass' }),
      (err: Error & { code?: number }) => err.code === 4)
  } finally {
    await broker.stop()
  }
})

test('a malformed --password-hash is refused with the reason and nothing is written', async () => {
  const dir = tempDir()
  const good = 'scrypt$32768$8$1$c2FsdHNhbHRzYWx0c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U='
  const cases: Array<[string, RegExp]> = [
    ['correct horse battery', /expected scrypt\$N\$r\$p\$salt\$hash/],
    ['bcrypt$10$abc$def$ghi$jkl', /expected scrypt\$N\$r\$p\$salt\$hash/],
    [good.replace('$32768$', '$30000$'), /N must be a power of two/],
    [good.replace('$32768$', '$-1$'), /N, r and p must be positive integers/],
    [`${good.slice(0, -4)}!!!!`, /salt and hash must be base64/],
    [good.replace('$32768$8$', '$4194304$8$'), /parameters need more than 256 MiB/],
  ]
  for (const [hash, reason] of cases) {
    const result = await runCli(['user', 'add', 'henry', '--password-hash', hash, '--data-dir', dir])
    assert.equal(result.code, 1, `accepted ${hash}`)
    assert.match(result.stderr, /--password-hash is not a FleetMQ password hash: /)
    assert.match(result.stderr, reason)
    assert.match(result.stderr, /copy the whole "hash" value .*; no change was made \[FLEETMQ_ERR_FLAG_INVALID\]/)
  }
  const both = await runCli(['user', 'add', 'henry', '--password-hash', good, '--password-stdin', '--data-dir', dir], {}, 'henry-secret-1\n')
  assert.equal(both.code, 1)
  assert.match(both.stderr, /--password-hash excludes --password-file and --password-stdin/)
  assert.ok(!existsSync(join(dir, 'users.json')), 'a refused --password-hash wrote the store')
})
