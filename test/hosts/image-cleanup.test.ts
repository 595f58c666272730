import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { bootHost, createNetwork, REPO_ROOT, rootfsScratch } from '../helpers/hosts.js'

/*
 * cleanup and validate, the image phases, on a Debian 12 root filesystem (the cached test rootfs,
 * through an overlay) with everything an image must not keep planted in it.
 */
const provision = join(REPO_ROOT, 'scripts/provision/fleetmq-provision')
const runPhase = (phase: string, root: string) => spawnSync('bash', [provision, phase, '--root', root], { encoding: 'utf8' })

let scratch: Awaited<ReturnType<typeof rootfsScratch>>
before(async () => { scratch = await rootfsScratch() }, { timeout: 300_000 })
after(async () => { await scratch?.close() })

function plant(root: string): void {
  const put = (path: string, text: string) => {
    mkdirSync(join(root, path, '..'), { recursive: true })
    writeFileSync(join(root, path), text)
  }
  put('root/.ssh/authorized_keys', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest builder\n')
  put('home/admin/.ssh/authorized_keys', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest builder\n')
  put('etc/ssh/ssh_host_ed25519_key', '-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n')
  put('root/.bash_history', 'sudo cat /etc/fleetmq/secrets/cluster-secret\n')
  put('etc/machine-id', '0123456789abcdef0123456789abcdef\n')
  put('var/log/syslog', 'Nov 26 builder: provisioning\n')
  put('var/lib/cloud/instance/boot-finished', '1\n')
  put('etc/fleetmq/secrets/cluster-secret', 'x'.repeat(40))
  // The builder's key of the cluster CA's certificate, in the broker's copy and Redis' copy.
  put('etc/fleetmq/cluster-tls/node-key.pem', '-----BEGIN PRIVATE KEY-----\nfake\n-----END PRIVATE KEY-----\n')
  put('etc/redis/tls/node-key.pem', '-----BEGIN PRIVATE KEY-----\nfake\n-----END PRIVATE KEY-----\n')
  put('etc/ssh/sshd_config.d/50-cloud-init.conf', 'PasswordAuthentication yes\nPermitRootLogin yes\n')
  appendFileSync(join(root, 'etc/redis/sentinel.conf'), 'sentinel myid 0123456789abcdef0123456789abcdef01234567\n')
  // An image made from a running instance: its first boot's credentials and configure's Redis password.
  put('root/fleetmq-credentials', 'admin password  the-admin-password-of-the-builder\n')
  appendFileSync(join(root, 'etc/redis/redis.conf'), 'requirepass the-redis-password-of-the-builder\nmasterauth the-redis-password-of-the-builder\n')
  appendFileSync(join(root, 'etc/redis/sentinel.conf'), 'sentinel auth-pass fleetmq the-redis-password-of-the-builder\n')
  put('root/.ssh/known_hosts', '10.0.1.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest\n')
  put('var/lib/dhcp/dhclient.eth0.leases', 'lease { fixed-address 10.0.1.10; }\n')
  const shadow = readFileSync(join(root, 'etc/shadow'), 'utf8').replace(/^admin:[^:]*:/m, 'admin:$6$salt$hashhashhash:')
  writeFileSync(join(root, 'etc/shadow'), shadow)
}

test('validate names every piece of per-instance state left in an image, cleanup removes them all', { timeout: 120_000 }, () => {
  const root = scratch.root
  plant(root)

  const dirty = runPhase('validate', root)
  assert.equal(dirty.status, 1, dirty.stdout + dirty.stderr)
  for (const finding of [
    'authorized_keys file left: /root/.ssh/authorized_keys',
    'authorized_keys file left: /home/admin/.ssh/authorized_keys',
    'SSH host key left: /etc/ssh/ssh_host_ed25519_key',
    'account admin has a password or password hash in /etc/shadow',
    'shell history left: /root/.bash_history',
    'machine-id left: /etc/machine-id',
    'log left: /var/log/syslog',
    'cloud-init state left: /var/lib/cloud',
    'SSH accepts passwords: PasswordAuthentication is yes',
    'SSH lets root log in: PermitRootLogin is yes (set it to no)',
    'secret left: /etc/fleetmq/secrets/cluster-secret',
    'secret left: /etc/fleetmq/cluster-tls/node-key.pem',
    'secret left: /etc/redis/tls/node-key.pem',
    "Sentinel identity left: 'sentinel myid'",
    'credentials left: /root/fleetmq-credentials',
    "Redis password left: 'requirepass' in /etc/redis/redis.conf",
    "Redis password left: 'masterauth' in /etc/redis/redis.conf",
    "Redis password left: 'sentinel auth-pass' in /etc/redis/sentinel.conf",
    'known_hosts file left: /root/.ssh/known_hosts',
    'DHCP lease left: /var/lib/dhcp/dhclient.eth0.leases',
  ]) {
    assert.ok(dirty.stderr.includes(finding), `validate reports "${finding}":\n${dirty.stderr}`)
  }
  assert.match(dirty.stderr, /error: \d+ finding\(s\): this is not a clean image; run the cleanup phase/)

  for (let run = 1; run <= 2; run++) {
    const cleanup = runPhase('cleanup', root)
    assert.equal(cleanup.status, 0, `cleanup run ${run}: ${cleanup.stdout}${cleanup.stderr}`)
  }
  const clean = runPhase('validate', root)
  assert.equal(clean.status, 0, clean.stdout + clean.stderr)
  assert.match(clean.stdout, /clean: no keys, passwords, history, identity, logs or secrets left/)

  // The image still works as a system: accounts exist (without passwords), sshd takes keys only.
  assert.match(readFileSync(join(root, 'etc/passwd'), 'utf8'), /^admin:/m)
  assert.match(readFileSync(join(root, 'etc/shadow'), 'utf8'), /^admin:\*:/m)
  assert.equal(readFileSync(join(root, 'etc/machine-id'), 'utf8'), '')
  assert.ok(!existsSync(join(root, 'etc/ssh/ssh_host_ed25519_key')))
  assert.match(readFileSync(join(root, 'etc/ssh/sshd_config.d/01-fleetmq-hardening.conf'), 'utf8'), /^PasswordAuthentication no$/m)
  assert.match(readFileSync(join(root, 'etc/ssh/sshd_config.d/01-fleetmq-hardening.conf'), 'utf8'), /^PermitRootLogin no$/m)
  assert.doesNotMatch(readFileSync(join(root, 'etc/redis/sentinel.conf'), 'utf8'), /^sentinel myid /m)
  assert.doesNotMatch(readFileSync(join(root, 'etc/redis/redis.conf'), 'utf8') + readFileSync(join(root, 'etc/redis/sentinel.conf'), 'utf8'), /the-redis-password-of-the-builder/)
  // Debian's own settings stay: Redis still starts from this file.
  assert.match(readFileSync(join(root, 'etc/redis/redis.conf'), 'utf8'), /^port 6379$/m)
})

test('validate reads sshd_config as sshd does: the first value wins, Include files where they appear', { timeout: 60_000 }, () => {
  const root = scratch.root
  // A drop-in read before ours turns passwords back on: validate must see it.
  writeFileSync(join(root, 'etc/ssh/sshd_config.d/00-early.conf'), 'PasswordAuthentication yes\n')
  const result = runPhase('validate', root)
  assert.equal(result.status, 1)
  assert.match(result.stderr, /SSH accepts passwords: PasswordAuthentication is yes/)
  assert.doesNotMatch(result.stderr, /authorized_keys|host key|machine-id/, 'only the new finding')
})

test('on a running system (an AMI build): cleanup keeps the journal off disk, validate --live names what running services wrote after it', { timeout: 180_000 }, async () => {
  const network = await createNetwork()
  const host = await bootHost(network, 'builder', {
    index: 1,
    waitFor: 'started',
    // The provisioning folder inside the host, as the AMI build installs it.
    prepare: (root) => { spawnSync('cp', ['-a', join(REPO_ROOT, 'scripts/provision'), join(root, 'usr/local/lib/fleetmq-provision')]) },
  })
  const provisionInside = '/usr/local/lib/fleetmq-provision/fleetmq-provision'
  try {
    const sh = (command: string) => host.exec(command, { allowFailure: true })
    const ok = async (command: string) => {
      const result = await sh(command)
      assert.equal(result.code, 0, `${command}: ${result.stdout}${result.stderr}`)
      return result
    }
    // The build runs on a booted system: journald and the rest are up ('started' is systemd only).
    assert.match((await sh('systemctl is-system-running --wait')).stdout, /^(running|degraded)$/m)
    // What a build leaves: its own log, and this boot's persistent journal.
    await ok('echo "installing FleetMQ" > /var/log/fleetmq-build.log && logger -t build "image build" && journalctl --flush')
    assert.notEqual((await sh('find /var/log/journal -type f -size +0')).stdout.trim(), '', 'the build boot writes a persistent journal')

    const before = await sh(`bash ${provisionInside} validate --live`)
    assert.equal(before.code, 1, before.stdout + before.stderr)
    assert.match(before.stderr, /finding: cleanup has not run in this boot/)
    assert.match(before.stderr, /finding: log left: \/var\/log\/fleetmq-build\.log/)

    const cleanup = await sh(`bash ${provisionInside} cleanup`)
    assert.equal(cleanup.code, 0, cleanup.stdout + cleanup.stderr)
    // Services still running keep writing: the SSM agent to its own file, everyone to the journal.
    await ok('mkdir -p /var/log/amazon/ssm && echo "agent still running" >> /var/log/amazon/ssm/amazon-ssm-agent.log && logger -t build "after cleanup" && journalctl --flush')
    assert.equal((await sh('find /var/log/journal -type f -size +0')).stdout.trim(), '', 'the journal stays in memory after cleanup')
    assert.match((await sh('journalctl -t build --no-pager -o cat')).stdout, /after cleanup/, 'and still works')

    const live = await sh(`bash ${provisionInside} validate --live`)
    assert.equal(live.code, 0, live.stdout + live.stderr)
    assert.match(live.stdout, /ignored with --live: \/var\/log\/amazon\/ssm\/amazon-ssm-agent\.log \(written after cleanup by a running service\)/)
    assert.match(live.stdout, /clean: no keys, passwords, history, identity, logs or secrets left/)

    // Without --live the same system is not clean: that log is in it.
    const strict = await sh(`bash ${provisionInside} validate`)
    assert.equal(strict.code, 1)
    assert.match(strict.stderr, /finding: log left: \/var\/log\/amazon\/ssm\/amazon-ssm-agent\.log/)
    // Everything else still counts with --live: an authorized key planted after cleanup is named.
    await sh('mkdir -p /root/.ssh && echo "ssh-ed25519 AAAA builder" > /root/.ssh/authorized_keys')
    const planted = await sh(`bash ${provisionInside} validate --live`)
    assert.equal(planted.code, 1)
    assert.match(planted.stderr, /finding: authorized_keys file left: \/root\/\.ssh\/authorized_keys/)
    await sh('rm /root/.ssh/authorized_keys')
    // A cleanup of another boot does not count.
    await sh('echo 00000000-0000-0000-0000-000000000000 > /run/fleetmq-provision/cleanup-done')
    const stale = await sh(`bash ${provisionInside} validate --live`)
    assert.equal(stale.code, 1)
    assert.match(stale.stderr, /finding: cleanup has not run in this boot/)

    const misuse = await sh(`bash ${provisionInside} validate --live --root /mnt`)
    assert.equal(misuse.code, 1)
    assert.match(misuse.stderr, /--live validates this running system; it cannot be combined with --root/)
  } finally {
    await host.stop()
    await network.close()
  }
})
