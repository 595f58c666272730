/*
 * The image build's gate: `fleetmq-provision validate --root` (run by images/build.ts and the AMI
 * component) against a deliberately dirty root filesystem fails and names each finding; after
 * `cleanup --root` the same tree passes. A small tree with the files that matter, no full rootfs.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'
import { runRootPhase } from '../../images/customize.js'

let root: string

function put(path: string, content: string, mode = 0o644): void {
  mkdirSync(dirname(join(root, path)), { recursive: true })
  writeFileSync(join(root, path), content)
  chmodSync(join(root, path), mode)
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'fleetmq-dirty-rootfs-'))
  put('etc/ssh/sshd_config', 'Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\nPermitRootLogin yes\n')
  mkdirSync(join(root, 'etc/ssh/sshd_config.d'), { recursive: true })
  put('etc/ssh/ssh_host_ed25519_key', 'private key of the build machine\n', 0o600)
  put('root/.ssh/authorized_keys', 'ssh-ed25519 AAAA builder\n', 0o600)
  put('home/admin/.ssh/authorized_keys', 'ssh-ed25519 AAAA builder\n', 0o600)
  put('etc/shadow', 'root:$6$salt$hashhashhash:19000:0:99999:7:::\nadmin::19000:0:99999:7:::\nredis:*:19000:0:99999:7:::\n', 0o640)
  put('root/.bash_history', 'export SECRET=1\n')
  put('etc/machine-id', '0123456789abcdef0123456789abcdef\n')
  put('var/log/syslog', 'build log line\n')
  put('var/lib/cloud/instance/user-data.txt', '#cloud-config\n')
  put('etc/fleetmq/secrets/cluster-secret', 'a-secret-of-the-build-machine-0123456789\n', 0o640)
})

after(() => rmSync(root, { recursive: true, force: true }))

test('validate fails a dirty root filesystem and names each finding', async () => {
  const lines: string[] = []
  await assert.rejects(runRootPhase('validate', root, (line) => lines.push(line)), (err: Error) => {
    const text = `${lines.join('\n')}\n${err.message}`
    for (const finding of [
      'authorized_keys file left: /root/.ssh/authorized_keys',
      'authorized_keys file left: /home/admin/.ssh/authorized_keys',
      'SSH host key left: /etc/ssh/ssh_host_ed25519_key',
      'SSH accepts passwords: PasswordAuthentication is yes',
      'SSH lets root log in with a password: PermitRootLogin is yes',
      'account root has a password or password hash in /etc/shadow',
      'account admin has an empty password in /etc/shadow',
      'shell history left: /root/.bash_history',
      'machine-id left',
      'log left: /var/log/syslog',
      'cloud-init state left: /var/lib/cloud',
      'secret left: /etc/fleetmq/secrets/cluster-secret',
    ]) assert.ok(text.includes(finding), `validate did not name "${finding}":\n${text}`)
    assert.ok(!text.includes('account redis'), 'a locked account (*) is not a finding')
    return true
  })
})

test('after cleanup the same tree passes validate', async () => {
  await runRootPhase('cleanup', root, () => {})
  const lines: string[] = []
  await runRootPhase('validate', root, (line) => lines.push(line))
  assert.match(lines.join('\n'), /clean: no keys, passwords, history, identity, logs or secrets left/)
})
