/*
 * The image build's gate: `fleetmq-provision validate --root` (run by images/build.ts and the AMI
 * component) against a deliberately dirty root filesystem fails and names each finding; after
 * `cleanup --root` the same tree passes. A small tree with the files that matter, no full rootfs.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'
import { runRootPhase } from '../../images/customize.js'

let root: string
const ADMIN_PASSWORD = 'the-build-instances-admin-password'
const REDIS_PASSWORD = 'the-build-instances-redis-password'

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
  // An image made from a running instance: what its first boot and configure wrote.
  put('root/fleetmq-credentials', `admin password  ${ADMIN_PASSWORD}\n`, 0o600)
  put('etc/redis/redis.conf', `port 6379\nrequirepass ${REDIS_PASSWORD}\nmasterauth ${REDIS_PASSWORD}\n`, 0o640)
  put('etc/redis/sentinel.conf', `port 26379\nrequirepass ${REDIS_PASSWORD}\nsentinel sentinel-pass ${REDIS_PASSWORD}\nsentinel monitor fleetmq 10.0.1.10 6379 2\nsentinel auth-pass fleetmq ${REDIS_PASSWORD}\n`, 0o640)
  put('root/.ssh/known_hosts', '10.0.1.11 ssh-ed25519 AAAA node\n', 0o600)
  put('home/admin/.ssh/known_hosts.old', '10.0.1.11 ssh-ed25519 AAAA node\n', 0o600)
  put('var/lib/dhcp/dhclient.eth0.leases', 'lease { fixed-address 10.0.1.10; }\n')
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
      'SSH lets root log in: PermitRootLogin is yes (set it to no)',
      'account root has a password or password hash in /etc/shadow',
      'account admin has an empty password in /etc/shadow',
      'shell history left: /root/.bash_history',
      'machine-id left',
      'log left: /var/log/syslog',
      'cloud-init state left: /var/lib/cloud',
      'secret left: /etc/fleetmq/secrets/cluster-secret',
      'credentials left: /root/fleetmq-credentials',
      "Redis password left: 'requirepass' in /etc/redis/redis.conf",
      "Redis password left: 'masterauth' in /etc/redis/redis.conf",
      "Redis password left: 'requirepass' in /etc/redis/sentinel.conf",
      "Redis password left: 'sentinel sentinel-pass' in /etc/redis/sentinel.conf",
      "Redis password left: 'sentinel auth-pass' in /etc/redis/sentinel.conf",
      'known_hosts file left: /root/.ssh/known_hosts',
      'known_hosts file left: /home/admin/.ssh/known_hosts.old',
      'DHCP lease left: /var/lib/dhcp/dhclient.eth0.leases',
    ]) assert.ok(text.includes(finding), `validate did not name "${finding}":\n${text}`)
    assert.ok(!text.includes('account redis'), 'a locked account (*) is not a finding')
    assert.ok(!text.includes(REDIS_PASSWORD) && !text.includes(ADMIN_PASSWORD), 'a finding names where a secret is, never the secret')
    return true
  })
})

test('after cleanup the same tree passes validate', async () => {
  await runRootPhase('cleanup', root, () => {})
  const lines: string[] = []
  await runRootPhase('validate', root, (line) => lines.push(line))
  assert.match(lines.join('\n'), /clean: no keys, passwords, history, identity, logs or secrets left/)
  // The Redis configs keep what is not secret; first boot writes the instance's own password.
  const sentinel = readFileSync(join(root, 'etc/redis/sentinel.conf'), 'utf8')
  assert.ok(!sentinel.includes(REDIS_PASSWORD) && !readFileSync(join(root, 'etc/redis/redis.conf'), 'utf8').includes(REDIS_PASSWORD))
  assert.match(sentinel, /^sentinel monitor fleetmq 10\.0\.1\.10 6379 2$/m)
})
