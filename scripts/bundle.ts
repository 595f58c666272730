/*
 * `npm run bundle [-- --arch x64|arm64] [--out DIR]`: the self-contained tarball a host installs.
 *
 * dist/fleetmq-<version>-linux-<arch>.tar.gz holds one folder, fleetmq-<version>-linux-<arch>/:
 *   bin/fleetmq          the CLI, run on the bundled Node.js (bin/fleetmq.js is the entry point)
 *   build/broker/        the compiled broker
 *   node_modules/        production dependencies, exactly as package-lock.json resolves them
 *   node/bin/node        Node.js from the npm package node-linux-<arch> (pinned below)
 *   systemd/             the unit(s)   config/  the default config   BUNDLE.json  what was built
 * and dist/SHA256SUMS lists every bundle in dist/. A host needs nothing else from the internet.
 *
 * Reproducible: the same commit gives the same bytes. Entries are sorted, every mtime is
 * SOURCE_DATE_EPOCH (the commit time unless set), owners are 0/0 with no names, the GNU tar
 * format carries no pax timestamps, modes are normalised, and gzip writes no name or time.
 */
import { Command, Option } from 'commander'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import {
  chmodSync, copyFileSync, cpSync, createReadStream, createWriteStream, existsSync, lstatSync, mkdirSync,
  mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { createGzip } from 'node:zlib'

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')

export const ARCHITECTURES = ['x64', 'arm64'] as const
export type BundleArch = (typeof ARCHITECTURES)[number]

/**
 * The Node.js runtime shipped in every bundle: the newest 24.x LTS on the npm registry when it was
 * pinned. The integrity is the registry's own (`npm view node-linux-<arch>@<version> dist.integrity`);
 * a tarball that does not match is refused.
 */
export const NODE_RUNTIME = Object.freeze({
  version: '24.21.0',
  integrity: Object.freeze({
    x64: 'sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==',
    arm64: 'sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==',
  } satisfies Record<BundleArch, string>),
})

export interface BundleOptions {
  arch: BundleArch
  /** Where the tarball and SHA256SUMS go; `dist/` of the repository by default. */
  outDir?: string
  /** Seconds since the epoch for every entry; the last commit's time by default. */
  sourceDateEpoch?: number
  /** Progress lines; stderr by default. */
  log?: (line: string) => void
}

export interface BuiltBundle {
  file: string
  sha256: string
  bytes: number
  /** Top-level folder inside the tarball. */
  root: string
  manifest: BundleManifest
}

export interface BundleManifest {
  name: 'fleetmq'
  version: string
  arch: BundleArch
  commit: string | null
  sourceDateEpoch: number
  node: string
}

interface PackageJson {
  name: string
  version: string
  description?: string
  license?: string
  type?: string
  dependencies?: Record<string, string>
}

interface LockEntry {
  version?: string
  dev?: boolean
  optional?: boolean
  link?: boolean
  os?: string[]
  cpu?: string[]
  hasInstallScript?: boolean
}

/** `dist/fleetmq-<version>-linux-<arch>.tar.gz`: the name infra/config.ts expects. */
export const bundleName = (version: string, arch: BundleArch): string => `fleetmq-${version}-linux-${arch}`

async function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const child = spawn(command, args, { cwd: options.cwd ?? REPO_ROOT, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d })
  child.stderr.on('data', (d: Buffer) => { stderr += d })
  const [code] = (await once(child, 'close')) as [number | null]
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${code}):\n${(stderr || stdout).trim()}`)
  return stdout
}

async function gitValue(args: string[]): Promise<string | null> {
  try {
    return (await run('git', ['-C', REPO_ROOT, ...args])).trim()
  } catch {
    return null
  }
}

async function resolveSourceDateEpoch(given: number | undefined): Promise<number> {
  if (given !== undefined) return given
  const fromEnv = process.env.SOURCE_DATE_EPOCH
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!/^\d+$/.test(fromEnv)) throw new Error(`SOURCE_DATE_EPOCH="${fromEnv}" is not a number of seconds; unset it to use the commit time`)
    return Number(fromEnv)
  }
  const commitTime = await gitValue(['log', '-1', '--format=%ct'])
  if (commitTime === null || !/^\d+$/.test(commitTime)) {
    throw new Error('cannot read the commit time (not a git checkout?); set SOURCE_DATE_EPOCH to the seconds since the epoch the bundle should carry')
  }
  return Number(commitTime)
}

/** Compiles broker/ alone into `outDir` (a fresh tree: no stale files from an old build/). */
async function compileBroker(outDir: string, workDir: string): Promise<void> {
  const tsconfig = join(workDir, 'tsconfig.bundle.json')
  writeFileSync(tsconfig, JSON.stringify({
    extends: join(REPO_ROOT, 'tsconfig.json'),
    compilerOptions: { outDir, rootDir: REPO_ROOT, sourceMap: false, declaration: false, incremental: false },
    include: [join(REPO_ROOT, 'broker/**/*.ts')],
    // The dashboard's pages are browser code with their own tsconfig (DOM, no Node), built below.
    exclude: [join(REPO_ROOT, 'broker/dashboard/ui')],
  }))
  const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc')
  await run(process.execPath, [tsc, '-p', tsconfig])
  const ui = join(outDir, 'broker/dashboard/ui')
  await run(process.execPath, [tsc, '-p', join(REPO_ROOT, 'broker/dashboard/ui/tsconfig.json'), '--outDir', ui])
  for (const file of ['index.html', 'style.css']) copyFileSync(join(REPO_ROOT, 'broker/dashboard/ui', file), join(ui, file))
}

/**
 * Copies the production dependency tree as package-lock.json resolves it, from the installed
 * node_modules (what `npm ci --omit=dev` would install, without the network). Refuses a tree
 * that does not match the lockfile, and packages that would differ by platform.
 */
function copyProductionDependencies(target: string): number {
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> }
  let copied = 0
  for (const [path, entry] of Object.entries(lock.packages).sort(([a], [b]) => a.localeCompare(b))) {
    if (path === '' || entry.dev || !path.startsWith('node_modules/')) continue
    if (entry.link) throw new Error(`${path} is a linked package; the bundle only takes packages from the registry`)
    if (entry.os || entry.cpu || entry.hasInstallScript) {
      throw new Error(`${path} is platform-specific (os/cpu/install script): the bundle copies one tree for every architecture; build its binaries per architecture before shipping it`)
    }
    const source = join(REPO_ROOT, path)
    if (!existsSync(join(source, 'package.json'))) {
      if (entry.optional) continue
      throw new Error(`${path} is missing; run npm ci first`)
    }
    const installed = (JSON.parse(readFileSync(join(source, 'package.json'), 'utf8')) as { version: string }).version
    if (entry.version !== undefined && installed !== entry.version) {
      throw new Error(`${path} is ${installed} but package-lock.json says ${entry.version}; run npm ci first`)
    }
    // Nested node_modules are entries of their own (copied only when they are production ones).
    cpSync(source, join(target, path), { recursive: true, dereference: false, filter: (src) => src === source || !src.startsWith(join(source, 'node_modules')) })
    copied++
  }
  return copied
}

function sha512Integrity(file: string): string {
  return `sha512-${createHash('sha512').update(readFileSync(file)).digest('base64')}`
}

/** The node-linux-<arch> tarball, fetched once into .cache/node-runtime/ and checked every time. */
async function nodeRuntimeTarball(arch: BundleArch, log: (line: string) => void): Promise<string> {
  const cacheDir = join(REPO_ROOT, '.cache', 'node-runtime')
  const file = join(cacheDir, `node-linux-${arch}-${NODE_RUNTIME.version}.tgz`)
  const expected = NODE_RUNTIME.integrity[arch]
  if (!existsSync(file)) {
    log(`fetching node-linux-${arch}@${NODE_RUNTIME.version} from the npm registry`)
    mkdirSync(cacheDir, { recursive: true })
    const download = mkdtempSync(join(cacheDir, 'download-'))
    try {
      await run('npm', ['pack', `node-linux-${arch}@${NODE_RUNTIME.version}`, '--pack-destination', download, '--silent'])
      renameSync(join(download, `node-linux-${arch}-${NODE_RUNTIME.version}.tgz`), file)
    } finally {
      rmSync(download, { recursive: true, force: true })
    }
  }
  const actual = sha512Integrity(file)
  if (actual !== expected) {
    rmSync(file, { force: true })
    throw new Error(`node-linux-${arch}@${NODE_RUNTIME.version}: integrity ${actual} does not match the pinned ${expected}; the cached copy was removed, run again to fetch it anew`)
  }
  return file
}

/** 0755 for folders and executables, 0644 for the rest: independent of the checkout's umask. */
function normaliseModes(path: string): void {
  const stat = lstatSync(path)
  if (stat.isSymbolicLink()) return
  if (stat.isDirectory()) {
    chmodSync(path, 0o755)
    for (const child of readdirSync(path)) normaliseModes(join(path, child))
    return
  }
  chmodSync(path, stat.mode & 0o111 ? 0o755 : 0o644)
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash)
  return hash.digest('hex')
}

/** Adds or replaces `file`'s line in SHA256SUMS (sha256sum format, sorted by name). */
function updateChecksums(outDir: string, fileName: string, sha256: string): void {
  const sums = join(outDir, 'SHA256SUMS')
  const lines = existsSync(sums) ? readFileSync(sums, 'utf8').split('\n').filter((line) => line.trim() !== '') : []
  const kept = lines.filter((line) => line.split(/\s+\*?/)[1] !== fileName && existsSync(join(outDir, line.split(/\s+\*?/)[1] ?? '')))
  kept.push(`${sha256}  ${fileName}`)
  kept.sort((a, b) => a.split(/\s+/)[1].localeCompare(b.split(/\s+/)[1]))
  writeFileSync(`${sums}.tmp`, `${kept.join('\n')}\n`)
  renameSync(`${sums}.tmp`, sums)
}

const WRAPPER = `#!/bin/sh
# Runs the FleetMQ CLI on the Node.js runtime shipped in this bundle.
set -eu
here=$(dirname "$(readlink -f "$0")")
exec "$here/../node/bin/node" "$here/fleetmq.js" "$@"
`

export async function buildBundle(options: BundleOptions): Promise<BuiltBundle> {
  const log = options.log ?? ((line: string) => process.stderr.write(`[bundle] ${line}\n`))
  const { arch } = options
  if (!ARCHITECTURES.includes(arch)) throw new Error(`--arch ${String(arch)}: use x64 or arm64`)
  const outDir = resolve(options.outDir ?? join(REPO_ROOT, 'dist'))
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as PackageJson
  const sourceDateEpoch = await resolveSourceDateEpoch(options.sourceDateEpoch)
  const root = bundleName(pkg.version, arch)
  const work = mkdtempSync(join(tmpdir(), 'fleetmq-bundle-'))
  try {
    const stage = join(work, root)
    mkdirSync(join(stage, 'bin'), { recursive: true })

    log('compiling the broker')
    await compileBroker(join(work, 'tsc'), work)
    mkdirSync(join(stage, 'build'))
    renameSync(join(work, 'tsc', 'broker'), join(stage, 'build', 'broker'))

    log('copying production dependencies')
    const count = copyProductionDependencies(stage)
    log(`  ${count} packages`)

    log(`adding Node.js ${NODE_RUNTIME.version} (node-linux-${arch})`)
    const tarball = await nodeRuntimeTarball(arch, log)
    await run('tar', ['-xzf', tarball, '-C', work, 'package/bin/node', 'package/LICENSE'])
    mkdirSync(join(stage, 'node', 'bin'), { recursive: true })
    renameSync(join(work, 'package', 'bin', 'node'), join(stage, 'node', 'bin', 'node'))
    renameSync(join(work, 'package', 'LICENSE'), join(stage, 'node', 'LICENSE'))

    log('adding the CLI, systemd unit and default config')
    const runtimePackage: PackageJson = {
      name: pkg.name, version: pkg.version, description: pkg.description, license: pkg.license, type: pkg.type, dependencies: pkg.dependencies,
    }
    writeFileSync(join(stage, 'package.json'), `${JSON.stringify(runtimePackage, null, 2)}\n`)
    copyFileSync(join(REPO_ROOT, 'bin', 'fleetmq.js'), join(stage, 'bin', 'fleetmq.js'))
    writeFileSync(join(stage, 'bin', 'fleetmq'), WRAPPER, { mode: 0o755 })
    cpSync(join(REPO_ROOT, 'packaging', 'systemd'), join(stage, 'systemd'), { recursive: true })
    cpSync(join(REPO_ROOT, 'packaging', 'config'), join(stage, 'config'), { recursive: true })
    const manifest: BundleManifest = {
      name: 'fleetmq', version: pkg.version, arch, commit: await gitValue(['rev-parse', 'HEAD']), sourceDateEpoch, node: NODE_RUNTIME.version,
    }
    writeFileSync(join(stage, 'BUNDLE.json'), `${JSON.stringify(manifest, null, 2)}\n`)
    normaliseModes(stage)

    log('writing the tarball')
    mkdirSync(outDir, { recursive: true })
    const fileName = `${root}.tar.gz`
    const file = join(outDir, fileName)
    const partial = `${file}.partial`
    const tar = spawn('tar', [
      '--create', '--format=gnu', '--sort=name', `--mtime=@${sourceDateEpoch}`,
      '--owner=0', '--group=0', '--numeric-owner', '--hard-dereference', '-C', work, root,
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    let tarErrors = ''
    tar.stderr.on('data', (d: Buffer) => { tarErrors += d })
    const tarExit = once(tar, 'close')
    // Node's gzip header carries no file name and a zero mtime: the output depends on the input only.
    await pipeline(tar.stdout, createGzip({ level: 6 }), createWriteStream(partial))
    const [code] = (await tarExit) as [number | null]
    if (code !== 0) throw new Error(`tar failed (exit ${code}): ${tarErrors.trim()}`)
    renameSync(partial, file)

    const sha256 = await sha256File(file)
    updateChecksums(outDir, fileName, sha256)
    const bytes = lstatSync(file).size
    log(`${file}: ${(bytes / 1_048_576).toFixed(1)} MiB, sha256 ${sha256}`)
    return { file, sha256, bytes, root, manifest }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

const hostArch = (): BundleArch => (process.arch === 'arm64' ? 'arm64' : 'x64')

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const program = new Command('bundle')
    .description('build dist/fleetmq-<version>-linux-<arch>.tar.gz and dist/SHA256SUMS')
    .addOption(new Option('--arch <arch>', 'target architecture').choices([...ARCHITECTURES]).default(hostArch()))
    .option('--out <dir>', 'output folder', join(REPO_ROOT, 'dist'))
    .action(async (options: { arch: BundleArch; out: string }) => {
      const bundle = await buildBundle({ arch: options.arch, outDir: options.out })
      process.stdout.write(`${bundle.file}\n`)
    })
  program.parseAsync(process.argv).catch((err: unknown) => {
    process.stderr.write(`bundle: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
