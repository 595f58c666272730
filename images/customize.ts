/*
 * What makes the Debian base the FleetMQ image: the provisioning folder and the first-boot units in
 * the rootfs, the install phase run inside it (systemd-nspawn, no network: the bundle carries
 * everything), services that must wait for first boot disabled, then the cleanup and validate
 * phases against the rootfs, and a boot of the finished rootfs that checks nothing but SSH listens
 * before first boot (the AWS Marketplace AMI policy: no open ports beyond what the product needs).
 */
import { spawn } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { containerPid1, machineName, stopContainer } from './container.js'
import { run, type Progress } from './run.js'

export const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))
export const PROVISION_SOURCE = join(REPO_ROOT, 'scripts/provision')
const FIRSTBOOT_SOURCE = join(REPO_ROOT, 'images/firstboot')

/** Inside the image: the same provisioning folder every other install runs, and first boot. */
export const IMAGE_PROVISION_DIR = '/usr/lib/fleetmq/provision'
export const PROVISION_ENTRY = 'fleetmq-provision'
/** The phases the image build runs, in order (the AMI component runs the same ones). */
export const BUILD_PHASES = ['install', 'cleanup', 'validate'] as const

export const FIRSTBOOT_UNITS = ['fleetmq-hostkeys.service', 'fleetmq-firstboot.service'] as const
/** The one port an instance listens on before first boot. */
export const PORTS_BEFORE_FIRSTBOOT = [22] as const

const nspawnBase = (rootfs: string, machine: string): string[] => [
  '-q', '-D', rootfs, '-M', machine, '--register=no', '--keep-unit', '--private-network', '--resolv-conf=off', '--timezone=off', '--link-journal=no',
]

/** The files of images/firstboot the image carries (install-image-files puts them in place). */
export const FIRSTBOOT_FILES = [
  'install-image-files', 'fleetmq-firstboot', 'firstboot-helper.mjs', ...FIRSTBOOT_UNITS, '90-fleetmq.cfg',
] as const
export const IMAGE_FILES_SCRIPT = 'install-image-files'

/** STAGE/provision and STAGE/firstboot: what install-image-files takes, here as in the AMI build. */
export function stageImageFiles(stage: string): void {
  rmSync(stage, { recursive: true, force: true })
  cpSync(PROVISION_SOURCE, join(stage, 'provision'), { recursive: true })
  mkdirSync(join(stage, 'firstboot'), { recursive: true })
  for (const file of FIRSTBOOT_FILES) copyFileSync(join(FIRSTBOOT_SOURCE, file), join(stage, 'firstboot', file))
}

/** Provisioning folder, first boot and cloud-init settings (install-image-files), and a neutral identity. */
export async function addImageFiles(rootfs: string, stage: string, progress: Progress): Promise<void> {
  await run('bash', [join(stage, 'firstboot', IMAGE_FILES_SCRIPT), '--root', rootfs, stage], { onLine: (line) => progress(`  ${line}`) })
  copyFileSync(join(REPO_ROOT, 'docs/images.md'), join(rootfs, 'usr/lib/fleetmq/README'))
  // The build host's name and resolver must not travel; cloud-init names each instance.
  writeFileSync(join(rootfs, 'etc/hostname'), 'fleetmq\n')
  writeFileSync(join(rootfs, 'etc/hosts'), '127.0.0.1 localhost\n127.0.1.1 fleetmq\n::1 localhost ip6-localhost ip6-loopback\n')
  rmSync(join(rootfs, 'etc/resolv.conf'), { force: true })
  writeFileSync(join(rootfs, 'etc/resolv.conf'), '')
}

/** The install phase in the rootfs, from the staged provisioning folder: no network, inputs read-only. */
export async function runInstallPhase(rootfs: string, stage: string, bundle: string, progress: Progress): Promise<void> {
  const inside = '/run/fleetmq-build'
  const machine = machineName('fleetmq-install')
  try {
    await run('systemd-nspawn', [
      ...nspawnBase(rootfs, machine), '--as-pid2',
      `--bind-ro=${resolve(bundle)}:${inside}/${basename(bundle)}`, `--bind-ro=${join(stage, 'provision')}:${inside}/provision`,
      'bash', `${inside}/provision/${PROVISION_ENTRY}`, 'install', '--bundle', `${inside}/${basename(bundle)}`,
    ], { onLine: (line) => { if (line.includes('fleetmq-provision')) progress(`  ${line}`) } })
  } finally {
    rmSync(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true, force: true })
  }
}

/** `fleetmq-provision cleanup|validate --root ROOTFS`, from the build host. */
export async function runRootPhase(phase: 'cleanup' | 'validate', rootfs: string, progress: Progress, provisionDir = PROVISION_SOURCE): Promise<void> {
  await run('bash', [join(provisionDir, PROVISION_ENTRY), phase, '--root', rootfs], {
    onLine: (line) => { if (line.includes('fleetmq-provision')) progress(`  ${line}`) },
  })
}

/**
 * Boots the finished rootfs (a throwaway overlay: nothing it writes stays) with first boot masked,
 * and lists what listens once systemd has settled. Throws naming each port other than SSH.
 */
export async function checkPortsBeforeFirstboot(rootfs: string, progress: Progress): Promise<number[]> {
  const machine = machineName('fleetmq-ports')
  const child = spawn('systemd-nspawn', [
    ...nspawnBase(rootfs, machine), '--volatile=overlay', '--boot',
    '--bind-ro=/dev/null:/etc/systemd/system/fleetmq-firstboot.service',
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d })
  child.stderr.on('data', (d: Buffer) => { output += d })
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
  let pid1 = 0
  try {
    const deadline = Date.now() + 180_000
    pid1 = await containerPid1(child, 180_000)
    if (!pid1) throw new Error(`the image did not boot in systemd-nspawn:\n${output.slice(-2000)}`)
    let state = ''
    while (Date.now() < deadline && !exited()) {
      state = (await run('nsenter', ['-t', String(pid1), '-m', '-p', 'systemctl', 'is-system-running'], { allowFailure: true })).stdout.trim()
      if (state === 'running' || state === 'degraded') break
      await sleep(500)
    }
    if (state !== 'running' && state !== 'degraded') throw new Error(`the image's systemd did not settle (state "${state}"):\n${output.slice(-2000)}`)
    const ss = await run('nsenter', ['-t', String(pid1), '-n', 'ss', '-H', '-l', '-t', '-u', '-n'])
    const ports = [...new Set(ss.stdout.trim().split('\n').filter(Boolean).map((line) => Number(line.trim().split(/\s+/)[4].split(':').pop())))].sort((a, b) => a - b)
    const extra = ports.filter((p) => !(PORTS_BEFORE_FIRSTBOOT as readonly number[]).includes(p))
    if (extra.length > 0) {
      throw new Error(`before first boot the image listens on port(s) ${extra.join(', ')} besides SSH:\n${ss.stdout}disable the service behind each (WAIT_FOR_FIRSTBOOT in images/firstboot/install-image-files) so that only first boot starts it`)
    }
    progress(`  listening before first boot: ${ports.join(', ') || 'nothing'} (state ${state})`)
    return ports
  } finally {
    await stopContainer({ pid1, nspawn: child, machine })
  }
}
