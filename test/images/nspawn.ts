/*
 * Hosts booted from the image's own root filesystem with systemd-nspawn (real systemd, real
 * cloud-init with a NoCloud seed folder, real first boot), each in its own network namespace on
 * the private bridge of test/helpers/hosts.ts. Cheaper than a second TCG VM: the user-data tests
 * run on these. Every host boots from an overlay over the rootfs, so the rootfs stays clean.
 *
 * Kept beside bootHost of test/helpers/hosts.ts (which has a `rootfs` option now) because that one
 * takes nspawn's first child for the container's PID 1, and on a busy machine that is nspawn's
 * short-lived intermediate process: `waitFor: 'started'` then times out (seen in this suite).
 * images/container.ts picks the child that is PID 1 of its own namespace. Once hosts.ts does the
 * same, this file goes and the tests call bootHost(network, name, { rootfs, prepare, waitFor }).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostNetwork } from '../helpers/hosts.js'
import { containerPid1, stopContainer } from '../../images/container.js'
import { run } from '../../images/run.js'

export interface ImageHost {
  readonly name: string
  readonly address: string
  /** `bash -c command` as root inside the host (all its namespaces). */
  exec(command: string, options?: { allowFailure?: boolean }): Promise<{ code: number | null; stdout: string; stderr: string }>
  consoleLog(): string
  /** Halts the container (killed if it does not halt), removes its namespace and overlay; safe to call twice. */
  stop(): Promise<void>
}

export async function bootImageHost(network: HostNetwork, rootfs: string, name: string, index: number, userData = ''): Promise<ImageHost> {
  const machine = `fmq-${network.id}-${name}`
  const namespace = machine
  const address = `${network.prefix}.${10 + index}`
  const hostVeth = `fq${network.id}${index}`
  const base = mkdtempSync(join(tmpdir(), `${machine}-`))
  const root = join(base, 'root')
  const consoleFile = join(base, 'console.log')
  const consoleLog = (): string => (existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8') : '')
  let nspawn: ChildProcess | undefined
  let pid1 = 0
  let mounted = false
  // Undoes whatever was set up, in reverse; every step runs even when one before it failed.
  const teardown = async (): Promise<void> => {
    const errors: unknown[] = []
    const step = async (fn: () => unknown): Promise<void> => { try { await fn() } catch (err) { errors.push(err) } }
    if (nspawn) await step(() => stopContainer({ pid1, nspawn: nspawn!, machine }))
    let unmounted = true
    if (mounted) await step(async () => { unmounted = false; await run('umount', [root]); unmounted = true })
    await step(() => run('ip', ['netns', 'del', namespace]))
    // Never delete through a mount that is still there.
    if (unmounted) await step(() => rmSync(base, { recursive: true, force: true }))
    if (errors.length) throw new AggregateError(errors, `tearing down image host ${name}: ${errors.map((e) => (e as Error).message).join('; ')}`)
  }
  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> => (stopped ??= teardown())

  try {
    await run('ip', ['netns', 'add', namespace])
    await run('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace])
    await run('ip', ['link', 'set', hostVeth, 'netns', network.bridgeNamespace])
    await run('ip', ['-n', network.bridgeNamespace, 'link', 'set', hostVeth, 'master', 'br0', 'up'])
    await run('ip', ['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0'])
    await run('ip', ['-n', namespace, 'link', 'set', 'eth0', 'up'])
    await run('ip', ['-n', namespace, 'link', 'set', 'lo', 'up'])

    for (const dir of ['upper', 'work', 'root']) mkdirSync(join(base, dir), { recursive: true })
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${rootfs},upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`, root])
    mounted = true
    // The container's network is set up from outside; a container cannot remount its root.
    for (const unit of ['networking.service', 'systemd-remount-fs.service']) symlinkSync('/dev/null', join(root, 'etc/systemd/system', unit))
    writeFileSync(join(root, 'etc/cloud/cloud.cfg.d/99-test-network.cfg'), 'network: {config: disabled}\n')
    const seed = join(root, 'var/lib/cloud/seed/nocloud')
    mkdirSync(seed, { recursive: true })
    writeFileSync(join(seed, 'meta-data'), `instance-id: ${machine}\nlocal-hostname: ${name}\n`)
    writeFileSync(join(seed, 'user-data'), `#cloud-config\n${userData}`)

    const consoleFd = openSync(consoleFile, 'a')
    nspawn = spawn('systemd-nspawn', [
      '-D', root, '-M', machine, '--register=no', '--keep-unit', '--boot', `--network-namespace-path=/run/netns/${namespace}`, '--console=passive',
    ], { stdio: ['ignore', consoleFd, consoleFd] })
    closeSync(consoleFd)
    pid1 = await containerPid1(nspawn, 60_000)
    if (!pid1) throw new Error('systemd-nspawn started no container within 60 s')
  } catch (err) {
    const output = consoleLog().slice(-3000)
    await stop()
    throw new Error(`host ${name} did not start: ${(err as Error).message}\n${output}`)
  }
  return {
    name,
    address,
    consoleLog,
    exec: (command, options = {}) => run('nsenter', ['-t', String(pid1), '-a', '/bin/bash', '-c', command], { allowFailure: options.allowFailure }),
    stop,
  }
}
