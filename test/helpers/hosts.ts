/*
 * Real hosts for tests: Debian 12 containers booted with `systemd-nspawn --boot`, each in its own
 * network namespace on a private bridge with no route out. Each is what a fresh cloud VM looks
 * like: systemd, sshd, the Redis packages, an `admin` user with passwordless sudo, no FleetMQ.
 *
 *   root namespace ── veth ──┐
 *                            br0 (namespace fmq-<id>-br)
 *   host namespace 1 ─ veth ─┤     10.<a>.<b>.0/24; the test is .1, host i is .(10+i)
 *   host namespace 2 ─ veth ─┘     no default route anywhere: traffic cannot leave the machine
 *
 * The root filesystem is built once with mmdebstrap and cached in .cache/rootfs-<hash>/; every host
 * boots from an overlay (or a copy) of it. Measured facts behind this: the team's shared HOSTS.md.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import {
  chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { containerPid1, stopContainer } from '../../images/container.js'

export const REPO_ROOT = resolve(import.meta.dirname, '../..')
const CACHE_DIR = join(REPO_ROOT, '.cache')

/** What a fresh Debian 12 cloud VM has that matters here (FleetMQ itself is never in it). */
export const ROOTFS_PACKAGES = [
  'systemd-sysv', 'dbus', 'openssh-server', 'iproute2', 'redis-server', 'redis-sentinel', 'nftables', 'sudo', 'ca-certificates',
] as const
const SUITE = 'bookworm'
/** The login Debian's cloud images give: `admin`, passwordless sudo. Pulumi connects as it. */
export const HOST_USER = 'admin'

/** Customisations baked into the cached rootfs: the same for every host, nothing secret. */
const CUSTOMIZE_HOOKS = [
  // The container cannot remount its root, and ifupdown would wait for interfaces nspawn configures.
  'systemctl --root="$1" mask systemd-remount-fs.service networking.service e2scrub_reap.service',
  `chroot "$1" useradd --create-home --shell /bin/bash --groups sudo ${HOST_USER}`,
  `printf '%s ALL=(ALL) NOPASSWD:ALL\\n' ${HOST_USER} > "$1/etc/sudoers.d/90-cloud-init-users"`,
  'chmod 0440 "$1/etc/sudoers.d/90-cloud-init-users"',
  // A cloud VM generates its host keys at first boot; each test host gets its own (see bootHost).
  'rm -f "$1"/etc/ssh/ssh_host_*',
  // Each host gets its machine-id at boot.
  ': > "$1/etc/machine-id"',
]

export interface Logger {
  (line: string): void
}
const quiet: Logger = () => {}

async function run(command: string, args: string[], options: { input?: string; allowFailure?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d: Buffer) => { stdout += d })
  child.stderr!.on('data', (d: Buffer) => { stderr += d })
  if (options.input !== undefined) child.stdin?.end(options.input)
  const [code] = (await once(child, 'close')) as [number | null]
  if (code !== 0 && !options.allowFailure) {
    throw new Error(`${command} ${args.join(' ')} failed (exit ${code}): ${(stderr || stdout).trim()}`)
  }
  return { code, stdout, stderr }
}

/**
 * The apt source files this machine's apt reads. mmdebstrap copies a MIRROR argument that is an
 * existing file (one-line or deb822) into the new system's sources, so the rootfs comes from the
 * same place this machine's packages do, and no package host is named in the repository. Without
 * any file mmdebstrap falls back to its own default.
 */
function aptSourceFiles(): string[] {
  const files = existsSync('/etc/apt/sources.list') ? ['/etc/apt/sources.list'] : []
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const name of readdirSync('/etc/apt/sources.list.d').sort()) {
      if (name.endsWith('.list') || name.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', name))
    }
  }
  // An empty or comment-only file is not a source: mmdebstrap would refuse it.
  return files.filter((file) => /^\s*(deb\s|Types:)/m.test(readFileSync(file, 'utf8')))
}

/** `.cache/rootfs-<hash>/`, built with mmdebstrap when missing (about 45 s), then reused. */
export async function ensureRootfs(log: Logger = quiet): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify({ SUITE, ROOTFS_PACKAGES, CUSTOMIZE_HOOKS, HOST_USER })).digest('hex').slice(0, 12)
  const dir = join(CACHE_DIR, `rootfs-${hash}`)
  if (existsSync(join(dir, 'etc', 'os-release'))) return dir
  mkdirSync(CACHE_DIR, { recursive: true })
  const building = `${dir}.building-${process.pid}`
  rmSync(building, { recursive: true, force: true })
  const started = Date.now()
  log(`building the Debian 12 root filesystem with mmdebstrap into ${dir} (cached afterwards)`)
  try {
    await run('mmdebstrap', [
      '--mode=root', '--variant=minbase', `--include=${ROOTFS_PACKAGES.join(',')}`,
      '--dpkgopt=path-exclude=/usr/share/doc/*', '--dpkgopt=path-exclude=/usr/share/man/*', '--dpkgopt=path-exclude=/usr/share/locale/*',
      ...CUSTOMIZE_HOOKS.map((hook) => `--customize-hook=${hook}`),
      SUITE, building, ...aptSourceFiles(),
    ])
    // Another test file may have finished the same build meanwhile: keep the first one.
    try {
      renameSync(building, dir)
    } catch (err) {
      if (!existsSync(join(dir, 'etc', 'os-release'))) throw err
    }
  } finally {
    rmSync(building, { recursive: true, force: true })
  }
  log(`root filesystem built in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  return dir
}

// --- network -------------------------------------------------------------------------------------

export interface HostNetwork {
  readonly id: string
  /** The bridge's namespace. */
  readonly bridgeNamespace: string
  /** `10.a.b`: host i is `${prefix}.${10 + i}`, the test side is `${prefix}.1`. */
  readonly prefix: string
  readonly testAddress: string
  /** Tears down the bridge namespace and the test-side veth (hosts first: `Host.stop()`). */
  close(): Promise<void>
}

function usedPrefixes(routes: string): Set<string> {
  const used = new Set<string>()
  for (const match of routes.matchAll(/(\d+\.\d+\.\d+)\.\d+\/\d+/g)) used.add(match[1])
  return used
}

/** A private bridge in its own namespace, joined to the root namespace by one veth. */
export async function createNetwork(): Promise<HostNetwork> {
  const id = randomBytes(3).toString('hex')
  const used = usedPrefixes((await run('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout)
  let prefix = ''
  for (let attempt = 0; attempt < 50 && !prefix; attempt++) {
    const candidate = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 254) + 1}`
    if (!used.has(candidate)) prefix = candidate
  }
  if (!prefix) throw new Error('no free 10.200-249.x.0/24 prefix for the test network')
  const bridgeNamespace = `fmq-${id}-br`
  const rootVeth = `fq${id}r`
  const testAddress = `${prefix}.1`
  await run('ip', ['netns', 'add', bridgeNamespace])
  try {
    await run('ip', ['-n', bridgeNamespace, 'link', 'add', 'br0', 'type', 'bridge'])
    await run('ip', ['-n', bridgeNamespace, 'link', 'set', 'br0', 'up'])
    await run('ip', ['-n', bridgeNamespace, 'link', 'set', 'lo', 'up'])
    await run('ip', ['link', 'add', rootVeth, 'type', 'veth', 'peer', 'name', 'uplink', 'netns', bridgeNamespace])
    await run('ip', ['-n', bridgeNamespace, 'link', 'set', 'uplink', 'master', 'br0', 'up'])
    await run('ip', ['addr', 'add', `${testAddress}/24`, 'dev', rootVeth])
    await run('ip', ['link', 'set', rootVeth, 'up'])
  } catch (err) {
    await run('ip', ['link', 'del', rootVeth], { allowFailure: true })
    await run('ip', ['netns', 'del', bridgeNamespace], { allowFailure: true })
    throw err
  }
  return {
    id,
    bridgeNamespace,
    prefix,
    testAddress,
    async close() {
      await run('ip', ['link', 'del', rootVeth], { allowFailure: true })
      await run('ip', ['netns', 'del', bridgeNamespace], { allowFailure: true })
    },
  }
}

/** A bare network namespace on the bridge: another machine's address, with nothing running there. */
export interface Probe {
  readonly address: string
  /** Whether a TCP connection to address:port is accepted within `seconds` (refused or dropped: false). */
  canConnect(address: string, port: number, seconds?: number): Promise<boolean>
  /** Runs a program inside the namespace (the machine's own binaries: namespaces share the filesystem). */
  exec(program: string, args: string[], options?: { allowFailure?: boolean; input?: string }): ReturnType<typeof run>
  close(): Promise<void>
}

/**
 * A probe at `${prefix}.${10 + index}`: where an attacker on the hosts' network, or a machine that is
 * not a member of their cluster, stands. Built in about 0.1 s; `close()` removes it.
 */
export async function addProbe(network: HostNetwork, index: number): Promise<Probe> {
  const namespace = `fmq-${network.id}-p${index}`
  const address = `${network.prefix}.${10 + index}`
  const hostVeth = `fq${network.id}p${index}`
  await run('ip', ['netns', 'add', namespace])
  try {
    await run('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace])
    await run('ip', ['link', 'set', hostVeth, 'netns', network.bridgeNamespace])
    await run('ip', ['-n', network.bridgeNamespace, 'link', 'set', hostVeth, 'master', 'br0', 'up'])
    await run('ip', ['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0'])
    await run('ip', ['-n', namespace, 'link', 'set', 'eth0', 'up'])
    await run('ip', ['-n', namespace, 'link', 'set', 'lo', 'up'])
  } catch (err) {
    await run('ip', ['netns', 'del', namespace], { allowFailure: true })
    throw err
  }
  const exec: Probe['exec'] = (program, args, options = {}) => run('ip', ['netns', 'exec', namespace, program, ...args], options)
  return {
    address,
    exec,
    async canConnect(target, port, seconds = 3) {
      const result = await exec('timeout', [String(seconds), 'bash', '-c', `exec 3<>/dev/tcp/${target}/${port}`], { allowFailure: true })
      return result.code === 0
    },
    async close() {
      await run('ip', ['netns', 'del', namespace], { allowFailure: true })
    },
  }
}

// --- hosts ---------------------------------------------------------------------------------------

export interface TestKey {
  readonly privateKey: string
  readonly publicKey: string
  readonly file: string
}

/** An ed25519 key pair for the test's SSH logins, in a temp folder. */
export async function createTestKey(dir = mkdtempSync(join(tmpdir(), 'fleetmq-key-'))): Promise<TestKey> {
  const file = join(dir, 'id_ed25519')
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleetmq-test', '-f', file])
  return { file, privateKey: readFileSync(file, 'utf8'), publicKey: readFileSync(`${file}.pub`, 'utf8') }
}

export interface Host {
  readonly name: string
  readonly address: string
  readonly namespace: string
  /** `SHA256:...` of the host's ed25519 key, as `ssh-keygen -lf` prints it. */
  readonly hostKeyFingerprint: string
  /** The host key's public line (`ssh-ed25519 AAAA...`). */
  readonly hostKeyPublic: string
  /** Milliseconds from `systemd-nspawn` to an SSH banner. */
  readonly bootMs: number
  /** The container's root as seen from the test machine. */
  readonly root: string
  /** The container's PID 1 as seen from the test machine. */
  readonly pid1: number
  /** Powers the host off (SIGRTMIN+3 to its systemd) and removes its namespace and filesystem. */
  stop(): Promise<void>
  /** Output of nspawn and the container's console. */
  consoleLog(): string
  /** `bash -c command` as root inside the host (all its namespaces, through nsenter). */
  exec(command: string, options?: { allowFailure?: boolean }): Promise<{ code: number | null; stdout: string; stderr: string }>
}

export interface BootOptions {
  /** Index on the network: address `${prefix}.${10 + index}`. */
  index: number
  /** The test's login key for `admin`; without it nobody can log in over SSH (`exec` still works). */
  key?: TestKey
  log?: Logger
  /**
   * A root filesystem folder to boot instead of the cached stock one (an image's rootfs). It is
   * booted through an overlay (else a copy) and stays unchanged. The harness then only names the
   * host and masks the units a container cannot run (`networking`, `systemd-remount-fs`); no host
   * key or login key is planted (the image makes its own at first boot), so `hostKeyFingerprint`
   * and `hostKeyPublic` are ''. `key` is still installed when given and the rootfs has `admin`.
   */
  rootfs?: string
  /** Runs on the host's writable root before boot (seed files, cloud-init config). */
  prepare?: (root: string) => void | Promise<void>
  /** `ssh` (default): resolves when sshd answers; `started`: when the container's systemd manager answers. */
  waitFor?: 'ssh' | 'started'
}

async function mountOverlay(lower: string, base: string): Promise<string | null> {
  const upper = join(base, 'upper')
  const work = join(base, 'work')
  const merged = join(base, 'root')
  for (const dir of [upper, work, merged]) mkdirSync(dir, { recursive: true })
  const result = await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged], { allowFailure: true })
  return result.code === 0 ? merged : null
}

/** A writable view of the cached rootfs (an overlay, else a copy), for tests that inspect files. */
export async function rootfsScratch(log: Logger = quiet): Promise<{ root: string; close(): Promise<void> }> {
  const rootfs = await ensureRootfs(log)
  const base = mkdtempSync(join(tmpdir(), 'fleetmq-rootfs-'))
  let root = await mountOverlay(rootfs, base)
  const overlay = root !== null
  if (!root) {
    root = join(base, 'root')
    await run('cp', ['--reflink=auto', '-a', `${rootfs}/.`, root])
  }
  const mounted = root
  return {
    root: mounted,
    async close() {
      if (overlay) await run('umount', [mounted], { allowFailure: true })
      rmSync(base, { recursive: true, force: true })
    },
  }
}

/** Resolves once `address:22` sends an SSH banner. */
async function waitForSshBanner(address: string, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive()) throw new Error('the container exited before sshd answered')
    const banner = await new Promise<boolean>((resolveBanner) => {
      const socket = tcpConnect({ host: address, port: 22 })
      const done = (ok: boolean) => { socket.destroy(); resolveBanner(ok) }
      socket.setTimeout(2_000, () => done(false))
      socket.once('data', (data: Buffer) => done(data.toString('latin1').startsWith('SSH-')))
      socket.once('error', () => done(false))
    })
    if (banner) return
    await sleep(200)
  }
  throw new Error(`no SSH banner from ${address}:22 within ${timeoutMs} ms`)
}

/**
 * Resolves once the container's PID 1 runs systemd (nspawn's forked child execs it) and its manager
 * answers on /run/systemd/private, so that `systemctl` inside works.
 */
async function waitForSystemd(pid1: number, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive()) throw new Error('the container exited before its systemd started')
    try {
      if (readlinkSync(`/proc/${pid1}/exe`).endsWith('/systemd') && existsSync(`/proc/${pid1}/root/run/systemd/private`)) return
    } catch {
      // Not there yet, or gone: the next round (or alive()) tells.
    }
    await sleep(100)
  }
  throw new Error(`the container's PID 1 was not systemd within ${timeoutMs} ms`)
}

function ownerOf(root: string, user: string): { uid: number; gid: number } {
  const line = readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith(`${user}:`))
  if (!line) throw new Error(`${user} is missing from ${root}/etc/passwd`)
  const [, , uid, gid] = line.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}

/**
 * Every container's systemd takes inotify instances, counted against root's limit together with
 * everything else root runs; the stock 128 runs out with a few hosts and other suites ("Failed to
 * allocate manager object: Too many open files"). Raised, never lowered.
 */
function ensureInotifyInstances(minimum = 1024): void {
  const file = '/proc/sys/fs/inotify/max_user_instances'
  if (Number(readFileSync(file, 'utf8')) < minimum) writeFileSync(file, String(minimum))
}

/**
 * Boots host `name` on `network` from the cached rootfs (or `options.rootfs`); resolves when its
 * sshd answers (or, with `waitFor: 'started'`, when its systemd runs).
 */
export async function bootHost(network: HostNetwork, name: string, options: BootOptions): Promise<Host> {
  const log = options.log ?? quiet
  const stock = options.rootfs === undefined
  if (!stock && !existsSync(join(options.rootfs!, 'etc', 'os-release'))) {
    throw new Error(`bootHost ${name}: ${options.rootfs} is not a root filesystem (no etc/os-release)`)
  }
  const rootfs = options.rootfs ?? await ensureRootfs(log)
  ensureInotifyInstances()
  const machine = `fmq-${network.id}-${name}`
  const namespace = machine
  const address = `${network.prefix}.${10 + options.index}`
  const hostVeth = `fq${network.id}${options.index}`
  const base = mkdtempSync(join(tmpdir(), `${machine}-`))

  // Namespace and link first: nspawn joins an existing namespace.
  await run('ip', ['netns', 'add', namespace])
  await run('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace])
  await run('ip', ['link', 'set', hostVeth, 'netns', network.bridgeNamespace])
  await run('ip', ['-n', network.bridgeNamespace, 'link', 'set', hostVeth, 'master', 'br0', 'up'])
  await run('ip', ['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0'])
  await run('ip', ['-n', namespace, 'link', 'set', 'eth0', 'up'])
  await run('ip', ['-n', namespace, 'link', 'set', 'lo', 'up'])

  // The host's own filesystem: an overlay on the rootfs (instant), else a copy.
  let root = await mountOverlay(rootfs, base)
  const overlay = root !== null
  if (!root) {
    root = join(base, 'root')
    await run('cp', ['--reflink=auto', '-a', `${rootfs}/.`, root])
  }
  const hostRoot = root
  writeFileSync(join(hostRoot, 'etc/hostname'), `${name}\n`)
  writeFileSync(join(hostRoot, 'etc/hosts'), `127.0.0.1 localhost\n127.0.1.1 ${name}\n`)
  let hostKeyPublic = ''
  let fingerprint = ''
  if (stock) {
    const hostKey = join(hostRoot, 'etc/ssh/ssh_host_ed25519_key')
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `root@${name}`, '-f', hostKey])
    hostKeyPublic = readFileSync(`${hostKey}.pub`, 'utf8').trim()
    fingerprint = (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`])).stdout.split(/\s+/)[1]
  } else {
    // The stock rootfs has these masked already (CUSTOMIZE_HOOKS); an image's rootfs does not.
    const units = join(hostRoot, 'etc/systemd/system')
    mkdirSync(units, { recursive: true })
    for (const unit of ['networking.service', 'systemd-remount-fs.service']) {
      rmSync(join(units, unit), { force: true })
      symlinkSync('/dev/null', join(units, unit))
    }
  }
  // The test's login key, in this host only (never in the cached rootfs).
  if (options.key && readFileSync(join(hostRoot, 'etc/passwd'), 'utf8').includes(`\n${HOST_USER}:`)) {
    const { uid, gid } = ownerOf(hostRoot, HOST_USER)
    const sshDir = join(hostRoot, 'home', HOST_USER, '.ssh')
    mkdirSync(sshDir, { recursive: true })
    writeFileSync(join(sshDir, 'authorized_keys'), options.key.publicKey)
    chmodSync(sshDir, 0o700)
    chmodSync(join(sshDir, 'authorized_keys'), 0o600)
    chownSync(sshDir, uid, gid)
    chownSync(join(sshDir, 'authorized_keys'), uid, gid)
  }
  await options.prepare?.(hostRoot)

  const consoleFile = join(base, 'console.log')
  const consoleFd = openSync(consoleFile, 'a')
  const started = Date.now()
  const nspawn: ChildProcess = spawn('systemd-nspawn', [
    '-D', hostRoot, '-M', machine, '--register=no', '--keep-unit', '--boot',
    `--network-namespace-path=/run/netns/${namespace}`, '--console=passive',
    // Its own network namespace, so it may set its own firewall (nftables) as a VM would; nspawn
    // grants CAP_NET_ADMIN with --private-network, not with a namespace path.
    '--capability=CAP_NET_ADMIN',
  ], { stdio: ['ignore', consoleFd, consoleFd] })
  let exited = false
  nspawn.once('exit', () => { exited = true })

  const teardown = async (pid1: number | undefined): Promise<void> => {
    // Halt, else kill the container whole (images/container.ts); the host's filesystem and
    // namespace go even when that fails, and the failure is reported after.
    const stopped = await stopContainer({ pid1: pid1 ?? 0, nspawn, machine, haltTimeoutMs: 20_000 }).then(() => undefined, (err: Error) => err)
    if (overlay) await run('umount', [hostRoot], { allowFailure: true })
    await run('ip', ['netns', 'del', namespace], { allowFailure: true })
    rmSync(base, { recursive: true, force: true })
    if (stopped) throw stopped
  }

  let pid1: number | undefined
  try {
    pid1 = await containerPid1(nspawn, 10_000)
    if (pid1 === 0) throw new Error('systemd-nspawn started no container within 10 s')
    if (options.waitFor === 'started') await waitForSystemd(pid1, 60_000, () => !exited)
    else await waitForSshBanner(address, 60_000, () => !exited)
  } catch (err) {
    const output = existsSync(consoleFile) ? readFileSync(consoleFile, 'utf8').slice(-3000) : ''
    await teardown(pid1)
    throw new Error(`host ${name} did not boot: ${(err as Error).message}\n${output}`)
  }
  const bootMs = Date.now() - started
  log(`${name} (${address}) ${options.waitFor === 'started' ? 'runs systemd' : 'answers SSH'} ${(bootMs / 1000).toFixed(1)} s after boot (${overlay ? 'overlay' : 'copy'} of ${stock ? 'the stock rootfs' : rootfs})`)
  let stopped: Promise<void> | undefined
  return {
    name,
    address,
    namespace,
    hostKeyFingerprint: fingerprint,
    hostKeyPublic,
    bootMs,
    root: hostRoot,
    pid1: pid1!,
    stop: () => (stopped ??= teardown(pid1)),
    consoleLog: () => readFileSync(consoleFile, 'utf8'),
    exec: (command, execOptions = {}) =>
      run('nsenter', ['-t', String(pid1), '-a', '/bin/bash', '-c', command], { allowFailure: execOptions.allowFailure }),
  }
}
