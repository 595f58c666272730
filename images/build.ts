/*
 * `npm run image -- [--arch x64] [--out DIR] [--bundle FILE]`: the marketplace VM image as a qcow2.
 *
 *   1 bundle     dist/fleetmq-<version>-linux-<arch>.tar.gz (built with npm run bundle when missing)
 *   2 base       Debian 12 from mmdebstrap, cached in .cache/image-base-<hash>.tar
 *   3 rootfs     the base unpacked, GRUB files
 *   4 install    fleetmq-provision install inside the rootfs (systemd-nspawn, no network), then
 *                images/firstboot/install-image-files: provisioning folder, first boot, cloud-init
 *   5 cleanup    fleetmq-provision cleanup --root
 *   6 validate   fleetmq-provision validate --root, and a boot that must be clean (systemd running,
 *                cloud-init done) with only SSH listening
 *   7 disk       raw disk with BIOS GRUB, then a compressed qcow2, its SHA-256 and a manifest
 *
 * Writes <out>/fleetmq-<version>-<arch>.qcow2, .qcow2.sha256 and .manifest.json.
 */
import { Command, Option } from 'commander'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ARCHITECTURES, bundleName, buildBundle, type BundleArch } from '../scripts/bundle.js'
import { addImageFiles, checkBootBeforeFirstboot, REPO_ROOT, runInstallPhase, runRootPhase, stageImageFiles } from './customize.js'
import { convertToQcow2, installGrubFiles, kernelVersion, makeRawDisk } from './disk.js'
import { ensureBaseTarball, IMAGE_PACKAGES, SUITE, unpackBase } from './rootfs.js'
import { run, type Progress } from './run.js'

export interface ImageOptions {
  arch: BundleArch
  outDir: string
  /** A bundle to install; dist/fleetmq-<version>-linux-<arch>.tar.gz (built when missing) by default. */
  bundle?: string
  /** Keep the finished root filesystem in this folder (tests boot nspawn hosts from it). */
  keepRootfs?: string
  progress?: Progress
}

export interface ImageManifest {
  name: string
  fleetmq: string
  node: string
  arch: BundleArch
  debian: string
  kernel: string
  bundle: { file: string; sha256: string }
  builtAt: string
  buildSeconds: number
  qcow2: { file: string; bytes: number; sha256: string }
  packages: Array<{ name: string; version: string }>
}

export interface BuiltImage {
  qcow2: string
  sha256: string
  manifestFile: string
  manifest: ImageManifest
  /** Seconds per step, for reports. */
  timings: Record<string, number>
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

function bundleManifest(file: string): Promise<{ version: string; node: string }> {
  return run('tar', ['-xzOf', file, '--wildcards', '*/BUNDLE.json']).then((r) => {
    const m = JSON.parse(r.stdout) as { version?: string; node?: string }
    if (!m.version || !m.node) throw new Error(`${file} has no BUNDLE.json with version and node: rebuild it with npm run bundle`)
    return { version: m.version, node: m.node }
  })
}

/** The latest modification time of any file under `dir` (0 when it does not exist). */
function newestMtime(dir: string): number {
  if (!existsSync(dir)) return 0
  let newest = 0
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs)
  }
  return newest
}

async function resolveBundle(options: ImageOptions, progress: Progress): Promise<string> {
  if (options.bundle) {
    if (!existsSync(options.bundle)) throw new Error(`--bundle ${options.bundle} does not exist; build one with npm run bundle -- --arch ${options.arch}`)
    return resolve(options.bundle)
  }
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version
  const file = join(REPO_ROOT, 'dist', `${bundleName(version, options.arch)}.tar.gz`)
  if (existsSync(file)) {
    // An image of old code is worse than a slower build: a bundle older than any file of the
    // compiled broker (npm run build) is built again.
    const newest = newestMtime(join(REPO_ROOT, 'build'))
    if (statSync(file).mtimeMs >= newest) return file
    progress(`${basename(file)} is older than build/ (npm run build): building it again (npm run bundle)`)
    return (await buildBundle({ arch: options.arch, log: (line) => progress(`  ${line}`) })).file
  }
  progress(`no ${basename(file)} yet: building it (npm run bundle)`)
  return (await buildBundle({ arch: options.arch, log: (line) => progress(`  ${line}`) })).file
}

async function packageList(rootfs: string): Promise<Array<{ name: string; version: string }>> {
  const out = await run('dpkg-query', [`--admindir=${join(rootfs, 'var/lib/dpkg')}`, '-W', '-f', '${Package}\t${Version}\n'])
  return out.stdout.trim().split('\n').map((line) => { const [name, version] = line.split('\t'); return { name, version } })
}

export async function buildImage(options: ImageOptions): Promise<BuiltImage> {
  const progress = options.progress ?? ((line: string) => process.stderr.write(`[image] ${line}\n`))
  if (options.arch !== 'x64') throw new Error(`--arch ${options.arch}: only x64 images are built for now (the disk step installs BIOS GRUB for x86); use --arch x64`)
  if (process.getuid?.() !== 0) throw new Error('building an image needs root (mmdebstrap --mode=root, systemd-nspawn, file owners in the rootfs); run it as root')
  const started = Date.now()
  const timings: Record<string, number> = {}
  let stepStarted = Date.now()
  let stepNumber = 0
  const step = (name: string, what: string): void => {
    stepNumber++
    stepStarted = Date.now()
    progress(`[${stepNumber}/7] ${name}: ${what}`)
  }
  const stepDone = (name: string): void => {
    timings[name] = (Date.now() - stepStarted) / 1000
    progress(`      ${name} done in ${timings[name].toFixed(1)} s`)
  }

  mkdirSync(options.outDir, { recursive: true })
  const work = mkdtempSync(join(options.outDir, '.image-build-'))
  const rootfs = join(work, 'rootfs')
  try {
    step('bundle', 'the FleetMQ bundle to install')
    const bundle = await resolveBundle(options, progress)
    const bundleInfo = await bundleManifest(bundle)
    progress(`      ${basename(bundle)} (FleetMQ ${bundleInfo.version}, Node.js ${bundleInfo.node})`)
    stepDone('bundle')

    step('base', `Debian 12 (${SUITE}) with ${IMAGE_PACKAGES.length} packages`)
    const base = await ensureBaseTarball(join(REPO_ROOT, '.cache'), options.arch, progress)
    progress(`      ${base.cached ? 'cached' : 'built'}: ${base.file}`)
    stepDone('base')

    step('rootfs', 'unpack the base, add GRUB')
    await unpackBase(base.file, rootfs)
    installGrubFiles(rootfs)
    stepDone('rootfs')

    step('install', 'fleetmq-provision install inside the rootfs, then provisioning, first boot and cloud-init files')
    const stage = join(work, 'stage')
    stageImageFiles(stage)
    await runInstallPhase(rootfs, stage, bundle, progress)
    await addImageFiles(rootfs, stage, progress)
    stepDone('install')

    step('cleanup', 'fleetmq-provision cleanup --root')
    await runRootPhase('cleanup', rootfs, progress)
    stepDone('cleanup')

    step('validate', 'fleetmq-provision validate --root, then a clean boot with only SSH listening')
    await runRootPhase('validate', rootfs, progress)
    await checkBootBeforeFirstboot(rootfs, progress)
    // That boot ran on a throwaway overlay; validate again that the rootfs itself stayed clean.
    await runRootPhase('validate', rootfs, () => {})
    stepDone('validate')

    step('disk', 'raw disk with BIOS GRUB, then a compressed qcow2')
    const name = `fleetmq-${bundleInfo.version}-${options.arch}`
    const packages = await packageList(rootfs)
    const kernel = kernelVersion(rootfs)
    const debian = readFileSync(join(rootfs, 'etc/debian_version'), 'utf8').trim()
    const raw = join(work, 'disk.raw')
    await makeRawDisk(rootfs, raw, work)
    const qcow2 = join(options.outDir, `${name}.qcow2`)
    await convertToQcow2(raw, qcow2)
    rmSync(raw, { force: true })
    const digest = await sha256(qcow2)
    writeFileSync(`${qcow2}.sha256`, `${digest}  ${basename(qcow2)}\n`)
    stepDone('disk')

    const manifest: ImageManifest = {
      name,
      fleetmq: bundleInfo.version,
      node: bundleInfo.node,
      arch: options.arch,
      debian,
      kernel,
      bundle: { file: basename(bundle), sha256: await sha256(bundle) },
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((Date.now() - started) / 100) / 10,
      qcow2: { file: basename(qcow2), bytes: statSync(qcow2).size, sha256: digest },
      packages,
    }
    const manifestFile = join(options.outDir, `${name}.manifest.json`)
    writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`)
    if (options.keepRootfs) {
      rmSync(options.keepRootfs, { recursive: true, force: true })
      await run('mv', [rootfs, options.keepRootfs])
    }
    progress(`${basename(qcow2)}: ${(manifest.qcow2.bytes / 1024 / 1024).toFixed(0)} MiB, built in ${manifest.buildSeconds} s`)
    return { qcow2, sha256: digest, manifestFile, manifest, timings }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const program = new Command('image')
    .description('build the FleetMQ marketplace VM image (Debian 12 qcow2, BIOS GRUB, cloud-init, first-boot secrets)')
    .addOption(new Option('--arch <arch>', 'CPU architecture').choices(ARCHITECTURES).default('x64'))
    .option('--out <dir>', 'output folder', join(REPO_ROOT, 'dist'))
    .option('--bundle <file>', 'the bundle to install (default: dist/fleetmq-<version>-linux-<arch>.tar.gz, built when missing)')
    .action(async (options: { arch: BundleArch; out: string; bundle?: string }) => {
      const image = await buildImage({ arch: options.arch, outDir: resolve(options.out), bundle: options.bundle })
      process.stdout.write(`${image.qcow2}\n${image.qcow2}.sha256\n${image.manifestFile}\n`)
    })
  program.parseAsync().catch((err: Error) => {
    process.stderr.write(`[image] error: ${err.message}\n`)
    process.exit(1)
  })
}
