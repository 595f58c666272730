import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { bootHost, type Host, type HostNetwork } from '../helpers/hosts.js'

/*
 * Hosts booted from the image's own root filesystem with systemd-nspawn (real systemd, real
 * cloud-init with a NoCloud seed folder, real first boot), each in its own network namespace on
 * the private bridge of test/helpers/hosts.ts. Cheaper than a second TCG VM: the user-data tests
 * run on these. Every host boots from an overlay over the rootfs, so the rootfs stays clean.
 */

export type ImageHost = Host

/** Boots `rootfs` as host `name` with `userData` (cloud-config body) in its NoCloud seed; resolves once its systemd runs. */
export function bootImageHost(network: HostNetwork, rootfs: string, name: string, index: number, userData = ''): Promise<ImageHost> {
  const machine = `fmq-${network.id}-${name}`
  return bootHost(network, name, {
    index,
    rootfs,
    waitFor: 'started',
    prepare(root) {
      // The container's network is set up from outside.
      writeFileSync(join(root, 'etc/cloud/cloud.cfg.d/99-test-network.cfg'), 'network: {config: disabled}\n')
      const seed = join(root, 'var/lib/cloud/seed/nocloud')
      mkdirSync(seed, { recursive: true })
      writeFileSync(join(seed, 'meta-data'), `instance-id: ${machine}\nlocal-hostname: ${name}\n`)
      writeFileSync(join(seed, 'user-data'), `#cloud-config\n${userData}`)
    },
  })
}
