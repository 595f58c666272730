/*
 * The image's root filesystem: a Debian 12 base built once with mmdebstrap and cached as a tarball
 * under .cache/ (keyed by a hash of everything that goes into it), then unpacked fresh for every
 * image build. Nothing host- or instance-specific is in the base: FleetMQ is added by the install
 * phase, per-instance state is generated at first boot.
 *
 * mmdebstrap gets no mirror argument: it uses this machine's apt sources, so no mirror name is
 * written into the repository.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { run, type Progress } from './run.js'

export const SUITE = 'bookworm'

/** What the image runs: a cloud VM (kernel, GRUB, cloud-init, sshd) plus Redis and Sentinel. */
export const IMAGE_PACKAGES = Object.freeze([
  'systemd-sysv', 'udev', 'dbus', 'linux-image-cloud-amd64', 'openssh-server', 'iproute2', 'ifupdown',
  'isc-dhcp-client', 'sudo', 'cloud-init', 'redis-server', 'redis-sentinel', 'nftables', 'ca-certificates', 'netbase',
  'openssl', 'grub-pc-bin', 'e2fsprogs',
  // cloud-init's growpart needs it: a marketplace disk is larger than the image, the root grows to fill it.
  'cloud-guest-utils',
  // Debian's security updates install themselves (install-image-files turns them on).
  'unattended-upgrades',
])

/** Trims that make the image smaller without changing what runs. */
const DPKG_OPTIONS = Object.freeze([
  'path-exclude=/usr/share/doc/*', 'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/man/*', 'path-exclude=/usr/share/locale/*', 'path-include=/usr/share/locale/locale.alias',
])

export function baseKey(arch: string): string {
  return createHash('sha256').update(JSON.stringify({ SUITE, arch, IMAGE_PACKAGES, DPKG_OPTIONS })).digest('hex').slice(0, 12)
}

const debianArch = (arch: string): string => (arch === 'arm64' ? 'arm64' : 'amd64')

/** `.cache/image-base-<key>.tar`: built with mmdebstrap when missing (about a minute), then reused. */
export async function ensureBaseTarball(cacheDir: string, arch: string, progress: Progress): Promise<{ file: string; cached: boolean }> {
  if (arch !== 'x64') throw new Error(`--arch ${arch}: only x64 images are built for now (the disk step installs BIOS GRUB for x86); use --arch x64`)
  const file = join(cacheDir, `image-base-${baseKey(arch)}.tar`)
  if (existsSync(file)) return { file, cached: true }
  mkdirSync(cacheDir, { recursive: true })
  const building = `${file}.building-${process.pid}`
  progress(`mmdebstrap ${SUITE} with ${IMAGE_PACKAGES.length} packages (cached afterwards as ${file})`)
  try {
    await run('mmdebstrap', [
      '--mode=root', '--variant=minbase', `--architectures=${debianArch(arch)}`, `--include=${IMAGE_PACKAGES.join(',')}`,
      ...DPKG_OPTIONS.map((option) => `--dpkgopt=${option}`),
      '--format=tar', SUITE, building,
    ])
    renameSync(building, file)
  } finally {
    rmSync(building, { force: true })
  }
  return { file, cached: false }
}

/** Unpacks the base tarball into an empty `dir`, owners and modes as they are in the tarball. */
export async function unpackBase(file: string, dir: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  await run('tar', ['-xf', file, '-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '--same-permissions'])
}
