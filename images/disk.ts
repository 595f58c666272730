/*
 * The bootable disk: one ext4 partition at 1 MiB labelled `rootfs`, BIOS GRUB in the first sectors,
 * built without loop devices or mounts (mkfs.ext4 -d fills the filesystem from a folder at an
 * offset inside the raw file; grub-mkimage's core.img is written after the MBR by dd). Then a
 * compressed qcow2. Measured facts behind this recipe: the team's shared HOSTS.md.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './run.js'

export const ROOT_LABEL = 'rootfs'
const GRUB_MODULES_DIR = '/usr/lib/grub/i386-pc'
/** Enough for Debian, Redis and two FleetMQ releases; cloud-init's growpart fills larger disks. */
export const DISK_SIZE_MIB = 2048
const PARTITION_OFFSET_MIB = 1

/** The kernel version the rootfs boots (its /boot/vmlinuz-<version>). */
export function kernelVersion(rootfs: string): string {
  const kernels = readdirSync(join(rootfs, 'boot')).filter((f) => f.startsWith('vmlinuz-')).sort()
  if (kernels.length === 0) throw new Error(`${rootfs}/boot holds no vmlinuz-*: the base must include linux-image-cloud-amd64`)
  return kernels[kernels.length - 1].slice('vmlinuz-'.length)
}

/** GRUB's config and modules inside the rootfs, so that core.img finds them at (hd0,msdos1). */
export function installGrubFiles(rootfs: string): void {
  const version = kernelVersion(rootfs)
  const grubDir = join(rootfs, 'boot/grub')
  mkdirSync(join(grubDir, 'i386-pc'), { recursive: true })
  for (const file of readdirSync(GRUB_MODULES_DIR)) {
    if (file.endsWith('.mod') || file.endsWith('.lst')) copyFileSync(join(GRUB_MODULES_DIR, file), join(grubDir, 'i386-pc', file))
  }
  // Serial and VGA console: marketplaces and `virsh console` show the serial one, where first boot
  // says where the credentials are.
  writeFileSync(join(grubDir, 'grub.cfg'), [
    'set timeout=1',
    'serial --unit=0 --speed=115200',
    'terminal_input serial console',
    'terminal_output serial console',
    "menuentry 'FleetMQ (Debian 12)' {",
    `  search --no-floppy --label ${ROOT_LABEL} --set=root`,
    `  linux /boot/vmlinuz-${version} root=LABEL=${ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8`,
    `  initrd /boot/initrd.img-${version}`,
    '}',
    '',
  ].join('\n'))
  writeFileSync(join(rootfs, 'etc/fstab'), `LABEL=${ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n`)
}

/** A raw BIOS-bootable disk holding `rootfs`, at `raw`. */
export async function makeRawDisk(rootfs: string, raw: string, workDir: string): Promise<void> {
  if (!existsSync(join(GRUB_MODULES_DIR, 'boot.img'))) throw new Error(`${GRUB_MODULES_DIR}/boot.img is missing: apt-get install grub-pc-bin (npm run setup)`)
  rmSync(raw, { force: true })
  await run('truncate', ['-s', `${DISK_SIZE_MIB}M`, raw])
  await run('sfdisk', ['-q', raw], { input: `label: dos\nstart=${PARTITION_OFFSET_MIB * 2048}, type=83, bootable\n` })
  const partitionKib = (DISK_SIZE_MIB - PARTITION_OFFSET_MIB) * 1024
  await run('mkfs.ext4', ['-q', '-F', '-L', ROOT_LABEL, '-d', rootfs, '-E', `offset=${PARTITION_OFFSET_MIB * 1024 * 1024}`, raw, `${partitionKib}k`])
  const core = join(workDir, 'core.img')
  await run('grub-mkimage', ['-O', 'i386-pc', '-o', core, '-p', '(hd0,msdos1)/boot/grub',
    'biosdisk', 'part_msdos', 'ext2', 'normal', 'linux', 'configfile', 'search', 'search_label', 'echo', 'test', 'gzio', 'serial', 'terminal'])
  await run('dd', [`if=${GRUB_MODULES_DIR}/boot.img`, `of=${raw}`, 'bs=440', 'count=1', 'conv=notrunc', 'status=none'])
  await run('dd', [`if=${core}`, `of=${raw}`, 'bs=512', 'seek=1', 'conv=notrunc', 'status=none'])
}

/** The compressed qcow2 of a raw disk. */
export async function convertToQcow2(raw: string, qcow2: string): Promise<void> {
  rmSync(qcow2, { force: true })
  await run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, qcow2])
}
