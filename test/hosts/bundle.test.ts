import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { buildBundle, NODE_RUNTIME } from '../../scripts/bundle.js'

const work = mkdtempSync(join(tmpdir(), 'fleetmq-bundle-test-'))
after(() => rmSync(work, { recursive: true, force: true }))

const tar = (...args: string[]) => spawnSync('tar', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })

test('two builds of the same commit are byte-identical, and the bundle runs on its own Node.js', { timeout: 300_000 }, async () => {
  const lines: string[] = []
  const first = await buildBundle({ arch: 'x64', outDir: join(work, 'a'), log: (l) => lines.push(l) })
  const second = await buildBundle({ arch: 'x64', outDir: join(work, 'b'), log: () => {} })
  assert.equal(first.sha256, second.sha256, 'same commit, same checksum')
  assert.match(first.file, /\/fleetmq-\d+\.\d+\.\d+-linux-x64\.tar\.gz$/)
  assert.ok(lines.some((l) => l.includes('compiling')) && lines.some((l) => l.includes('sha256')), `progress lines: ${lines.join(' | ')}`)

  // SHA256SUMS verifies with sha256sum, as an operator checks a download.
  assert.equal(readFileSync(join(work, 'a', 'SHA256SUMS'), 'utf8'), `${first.sha256}  ${first.root}.tar.gz\n`)
  const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: join(work, 'a'), encoding: 'utf8' })
  assert.equal(check.status, 0, check.stdout + check.stderr)

  // Owners 0/0, one fixed mtime, sorted entries.
  const listing = tar('--numeric-owner', '--full-time', '-tvzf', first.file).stdout.trim().split('\n')
  assert.ok(listing.every((l) => / 0\/0 /.test(l)), 'every entry belongs to 0/0')
  assert.equal(new Set(listing.map((l) => l.split(/\s+/).slice(3, 5).join(' '))).size, 1, 'one mtime for every entry')
  const names = tar('-tzf', first.file).stdout.trim().split('\n')
  assert.ok(names.every((n) => n.startsWith(`${first.root}/`)))
  for (const expected of ['bin/fleetmq', 'bin/fleetmq.js', 'node/bin/node', 'build/broker/cli/main.js', 'build/broker/dashboard/ui/app.js', 'build/broker/dashboard/ui/index.html', 'systemd/fleetmq.service', 'config/fleetmq.yaml', 'BUNDLE.json', 'node_modules/aedes/package.json']) {
    assert.ok(names.includes(`${first.root}/${expected}`), `${expected} is in the bundle`)
  }
  // Production dependencies only.
  for (const devOnly of ['typescript', 'mqtt', 'ssh2', '@pulumi/pulumi', 'tsx']) {
    assert.ok(!names.includes(`${first.root}/node_modules/${devOnly}/package.json`), `${devOnly} (a dev dependency) is not in the bundle`)
  }

  // Unpacked anywhere, the CLI runs on the bundled Node.js 24, not on this machine's.
  const unpacked = join(work, 'unpacked')
  spawnSync('mkdir', ['-p', unpacked])
  assert.equal(tar('-xzf', first.file, '-C', unpacked).status, 0)
  const root = join(unpacked, first.root)
  const version = spawnSync(join(root, 'bin/fleetmq'), ['--version'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } })
  assert.equal(version.status, 0, version.stderr)
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync('package.json', 'utf8')).version)
  assert.equal(spawnSync(join(root, 'node/bin/node'), ['--version'], { encoding: 'utf8' }).stdout.trim(), `v${NODE_RUNTIME.version}`)
  assert.match(NODE_RUNTIME.version, /^24\./, 'a Node.js 24 LTS runtime')
  const manifest = JSON.parse(readFileSync(join(root, 'BUNDLE.json'), 'utf8'))
  assert.equal(manifest.arch, 'x64')
  assert.equal(manifest.node, NODE_RUNTIME.version)
  const configCheck = spawnSync(join(root, 'bin/fleetmq'), ['config', 'check', join(root, 'config/fleetmq.yaml')], { encoding: 'utf8' })
  assert.equal(configCheck.status, 0, `the default config is valid: ${configCheck.stderr}`)

  // The unit is hardened as the issue asks.
  const unit = readFileSync(join(root, 'systemd/fleetmq.service'), 'utf8')
  for (const line of ['User=fleetmq', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'Restart=always', 'RestartSec=5s', 'EnvironmentFile=/etc/fleetmq/fleetmq.env']) {
    assert.ok(unit.split('\n').includes(line), `fleetmq.service has ${line}`)
  }
})

test('a bundle for another architecture carries that runtime, and an unknown one is refused', { timeout: 300_000 }, async () => {
  await assert.rejects(buildBundle({ arch: 'riscv' as 'x64', outDir: join(work, 'c'), log: () => {} }), /--arch riscv: use x64 or arm64/)
  const arm = await buildBundle({ arch: 'arm64', outDir: join(work, 'a'), log: () => {} })
  const file = spawnSync('sh', ['-c', `tar -xzOf ${arm.file} ${arm.root}/node/bin/node | head -c 20 | od -An -tx1`], { encoding: 'utf8' })
  // ELF header: magic, 64-bit, little-endian, executable, e_machine 0xb7 = AArch64.
  const elf = file.stdout.trim().split(/\s+/)
  assert.deepEqual([...elf.slice(0, 6), elf[16], elf[18]], ['7f', '45', '4c', '46', '02', '01', '02', 'b7'], `an aarch64 executable: ${elf.join(' ')}`)
  const sums = readFileSync(join(work, 'a', 'SHA256SUMS'), 'utf8').trim().split('\n')
  assert.equal(sums.length, 2, 'SHA256SUMS lists the x64 and the arm64 bundle')
})
