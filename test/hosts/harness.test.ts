import assert from 'node:assert/strict'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tcpConnect } from 'node:net'
import { after, before, test } from 'node:test'
import type { Client as SshClient } from 'ssh2'
import { connectSsh, exec } from '../../scripts/lib/remote-provision.js'
import { bootHost, createNetwork, createTestKey, ensureRootfs, HOST_USER, type Host, type HostNetwork, type TestKey } from '../helpers/hosts.js'

/* The test hosts themselves: what every host test relies on. */

let network: HostNetwork
let key: TestKey
let host: Host
let ssh: SshClient

before(async () => {
  network = await createNetwork()
  key = await createTestKey()
  host = await bootHost(network, 'probe', { index: 1, key })
  ssh = await connectSsh({ host: host.address, username: HOST_USER, privateKey: key.privateKey, hostKey: { fingerprint: host.hostKeyFingerprint } })
}, { timeout: 300_000 })

after(async () => {
  ssh?.end()
  await host?.stop()
  await network?.close()
})

const run = async (command: string) => (await exec(ssh, command)).stdout.trim()

test('a host is a fresh Debian 12 with systemd, sshd, sudo and the Redis packages, and no way out', { timeout: 60_000 }, async (t) => {
  t.diagnostic(`boot to SSH: ${(host.bootMs / 1000).toFixed(1)} s`)
  assert.match(await run('. /etc/os-release; echo "$ID $VERSION_ID"'), /^debian 12$/)
  assert.equal(await run('cat /proc/1/comm'), 'systemd')
  assert.match(await run('systemctl is-system-running --wait || true'), /^(running|degraded)$/)
  assert.equal(await run('sudo -n id -u'), '0')
  assert.match(await run('dpkg-query -W -f="\\${Package} \\${Status}\\n" redis-server redis-sentinel openssh-server'), /^openssh-server install ok installed\nredis-sentinel install ok installed\nredis-server install ok installed$/)
  assert.equal(await run('test -e /opt/fleetmq && echo present || echo absent'), 'absent', 'no FleetMQ on a fresh host')
  assert.equal(await run('ip route show default'), '', 'no default route')
  assert.match(await run('ip route get 1.1.1.1 2>&1 || true'), /unreachable/i)
  assert.equal(await run('hostname'), 'probe')
  // Its own host key, the one the harness reports.
  assert.match(await run('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub'), new RegExp(host.hostKeyFingerprint.replace(/[+/]/g, '\\$&')))
})

test('stopping a host powers it off: its PID 1 is gone and its address answers no more', { timeout: 120_000 }, async () => {
  const second = await bootHost(network, 'doomed', { index: 2, key })
  await second.stop()
  assert.equal(existsSync(`/proc/${second.pid1}`), false, 'the container PID 1 exited')
  assert.equal(existsSync(`/run/netns/${second.namespace}`), false)
  const answered = await new Promise<boolean>((resolve) => {
    const socket = tcpConnect({ host: second.address, port: 22 })
    socket.setTimeout(3_000, () => { socket.destroy(); resolve(false) })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
  assert.equal(answered, false)
})

test('a host boots from a given root filesystem (an image\'s), prepared before boot, and that folder stays unchanged', { timeout: 120_000 }, async () => {
  // Any Debian rootfs with systemd will do: the cached stock one stands in for an image's.
  const rootfs = await ensureRootfs()
  const image = await bootHost(network, 'image', {
    index: 3,
    rootfs,
    prepare: (root) => writeFileSync(join(root, 'etc/fleetmq-test-seed'), 'seeded\n'),
    waitFor: 'started',
  })
  try {
    assert.equal(image.hostKeyFingerprint, '', 'no host key planted: an image makes its own')
    assert.equal((await image.exec('cat /proc/1/comm')).stdout.trim(), 'systemd')
    assert.equal((await image.exec('cat /etc/fleetmq-test-seed')).stdout, 'seeded\n')
    assert.equal((await image.exec('hostname')).stdout.trim(), 'image')
    assert.match((await image.exec('systemctl is-system-running --wait || true')).stdout, /^(running|degraded)$/m)
    assert.equal((await image.exec('systemctl is-enabled networking.service || true')).stdout.trim(), 'masked')
    assert.equal((await image.exec('exit 3', { allowFailure: true })).code, 3)
  } finally {
    await image.stop()
  }
  assert.equal(existsSync(join(rootfs, 'etc/fleetmq-test-seed')), false, 'the booted folder is unchanged')
  assert.equal(existsSync(`/run/netns/${image.namespace}`), false)
})
