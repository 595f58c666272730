/*
 * What makes the Debian base the FleetMQ image: the provisioning folder and the first-boot units in
 * the rootfs, the install phase run inside it (systemd-nspawn, no network: the bundle carries
 * everything), services that must wait for first boot disabled, then the cleanup and validate
 * phases against the rootfs, and a boot of the finished rootfs that checks it boots clean (no failed
 * unit, cloud-init done) and that nothing but SSH listens before first boot (the AWS Marketplace
 * AMI policy: no open ports beyond what the product needs).
 */
import { spawn } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
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
 * What a clean boot must show, or why not: systemd `running` (not `degraded`: a marketplace scan and
 * users' automation read a failed unit as a failed launch) and `cloud-init status` done (not
 * error). `failed` is `systemctl --failed`, `cloudInit` is `cloud-init status --long`; both are
 * printed when the boot is not clean. Undefined when it is.
 */
export function bootProblem(state: string, cloudInitStatus: string, failed: string, cloudInit: string): string | undefined {
  const problems: string[] = []
  if (state !== 'running') problems.push(`systemctl is-system-running says "${state}" (expected running)`)
  if (cloudInitStatus !== 'done') problems.push(`cloud-init status says "${cloudInitStatus}" (expected done)`)
  if (problems.length === 0) return undefined
  return `${problems.join('; ')}\nfailed units:\n${failed.trim() || '(none)'}\ncloud-init status --long:\n${cloudInit.trim()}`
}

/** `status: done` of `cloud-init status` as `done`. */
export const cloudInitStatus = (output: string): string => /^status:\s*(\S+)/m.exec(output)?.[1] ?? (output.trim() || 'no answer')

/**
 * Boots the finished rootfs (a throwaway overlay: nothing it writes stays) with first boot masked
 * and cloud-init given an empty NoCloud seed, as a user's instance runs it. Throws when the boot is
 * not clean (bootProblem: a failed unit, cloud-init in error) or when anything but SSH listens once
 * systemd has settled, naming each port.
 */
export async function checkBootBeforeFirstboot(rootfs: string, progress: Progress): Promise<number[]> {
  const machine = machineName('fleetmq-ports')
  const seed = mkdtempSync(join(tmpdir(), 'fleetmq-boot-check-'))
  writeFileSync(join(seed, 'meta-data'), `instance-id: ${machine}\nlocal-hostname: fleetmq-check\n`)
  writeFileSync(join(seed, 'user-data'), '#cloud-config\n')
  // The container has only loopback: cloud-init has no network to configure.
  writeFileSync(join(seed, 'network.cfg'), 'network: {config: disabled}\n')
  const child = spawn('systemd-nspawn', [
    ...nspawnBase(rootfs, machine), '--volatile=overlay', '--boot',
    '--bind-ro=/dev/null:/etc/systemd/system/fleetmq-firstboot.service',
    // A container cannot remount its root: this unit fails only here, never on a VM.
    '--bind-ro=/dev/null:/etc/systemd/system/systemd-remount-fs.service',
    `--bind-ro=${seed}:/var/lib/cloud/seed/nocloud`,
    `--bind-ro=${join(seed, 'network.cfg')}:/etc/cloud/cloud.cfg.d/99-boot-check-network.cfg`,
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
    const inside = (args: string[]) => run('nsenter', ['-t', String(pid1), '-m', '-p', ...args], { allowFailure: true })
    let state = ''
    while (Date.now() < deadline && !exited()) {
      state = (await inside(['systemctl', 'is-system-running'])).stdout.trim()
      if (state === 'running' || state === 'degraded') break
      await sleep(500)
    }
    if (state !== 'running' && state !== 'degraded') throw new Error(`the image's systemd did not settle (state "${state}"):\n${output.slice(-2000)}`)
    const cloudInit = (await inside(['timeout', '120', 'cloud-init', 'status', '--wait', '--long'])).stdout
    const failed = (await inside(['systemctl', '--failed', '--no-legend', '--no-pager'])).stdout
    const problem = bootProblem(state, cloudInitStatus(cloudInit), failed, cloudInit)
    if (problem) throw new Error(`the image does not boot clean: ${problem}`)
    const ss = await run('nsenter', ['-t', String(pid1), '-n', 'ss', '-H', '-l', '-t', '-u', '-n'])
    const ports = [...new Set(ss.stdout.trim().split('\n').filter(Boolean).map((line) => Number(line.trim().split(/\s+/)[4].split(':').pop())))].sort((a, b) => a - b)
    const extra = ports.filter((p) => !(PORTS_BEFORE_FIRSTBOOT as readonly number[]).includes(p))
    if (extra.length > 0) {
      throw new Error(`before first boot the image listens on port(s) ${extra.join(', ')} besides SSH:\n${ss.stdout}disable the service behind each (WAIT_FOR_FIRSTBOOT in images/firstboot/install-image-files) so that only first boot starts it`)
    }
    progress(`  listening before first boot: ${ports.join(', ') || 'nothing'} (systemd running, cloud-init done)`)
    return ports
  } finally {
    await stopContainer({ pid1, nspawn: child, machine })
    rmSync(seed, { recursive: true, force: true })
  }
}
