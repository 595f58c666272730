/*
 * "Upload the stage, run a phase" over SSH: what Pulumi's remote commands, scripts/join-node and the
 * host tests all do to a machine, in one place.
 *
 *   /var/tmp/fleetmq-stage/provision/       scripts/provision, uploaded whole
 *   /var/tmp/fleetmq-stage/<bundle file>    the bundle (skipped when the same bytes are there)
 *   /var/tmp/fleetmq-stage/node.env         rendered by renderEnvFile() (broker/config/env.ts)
 *   /var/tmp/fleetmq-stage/secrets/<name>   cluster-secret, admin-password, redis-password
 *
 * and then `sudo bash /var/tmp/fleetmq-stage/provision/fleetmq-provision <phase> --env ... --bundle ...`.
 * Parameters travel in files, never as SSH environment variables.
 */
import { createHash, createHmac } from 'node:crypto'
import { appendFileSync, createReadStream, existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import ssh2 from 'ssh2'
import type { Client as SshClient, ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2'

const { Client } = ssh2

import { phaseCommand, PROVISION_PHASES, STAGE_DIR, type ProvisionPhase } from './phase-command.js'

export { phaseCommand, PROVISION_PHASES, STAGE_DIR, type ProvisionPhase }
export const SECRET_NAMES = ['cluster-secret', 'admin-password', 'redis-password'] as const
export type SecretName = (typeof SECRET_NAMES)[number]

// --- host keys -----------------------------------------------------------------------------------

/** `SHA256:<base64, no padding>` of a raw SSH public key blob, as OpenSSH prints it. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`
}

export interface HostKeyPolicy {
  /** Expected fingerprint (`SHA256:...`): the only key accepted. */
  fingerprint?: string
  /** known_hosts file to look the host up in (plain or hashed entries). */
  knownHostsFile?: string
  /** Accept a host missing from knownHostsFile and add it there (a different key is still refused). */
  acceptNew?: boolean
}

/** The name a host has in known_hosts: `addr`, or `[addr]:port` off port 22. */
const knownHostsName = (host: string, port: number): string => (port === 22 ? host : `[${host}]:${port}`)

function hostMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    // OpenSSH HashKnownHosts: |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
    const [, , salt, hash] = pattern.split('|')
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash
  }
  return pattern.split(',').includes(name)
}

/** Keys known_hosts holds for `name` (as raw blobs, by key type). */
export function knownHostKeys(file: string, name: string): Buffer[] {
  if (!existsSync(file)) return []
  const keys: Buffer[] = []
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/)
    if (fields.length < 3 || fields[0].startsWith('#') || fields[0].startsWith('@')) continue
    if (hostMatches(fields[0], name)) keys.push(Buffer.from(fields[2], 'base64'))
  }
  return keys
}

/** The key type inside an SSH public key blob (`ssh-ed25519`, ...). */
function keyType(blob: Buffer): string {
  const length = blob.readUInt32BE(0)
  return blob.subarray(4, 4 + length).toString('latin1')
}

export class HostKeyError extends Error {}

/**
 * A host verifier for ssh2 that follows `policy`, and records why it refused a key (ssh2 itself
 * only reports a generic handshake failure).
 */
export function hostVerifier(host: string, port: number, policy: HostKeyPolicy): { verify: (key: Buffer) => boolean; refusal: () => HostKeyError | undefined } {
  let refusal: HostKeyError | undefined
  const verify = (key: Buffer): boolean => {
    const seen = fingerprintOf(key)
    if (policy.fingerprint) {
      const expected = policy.fingerprint.startsWith('SHA256:') ? policy.fingerprint : `SHA256:${policy.fingerprint}`
      if (seen === expected.replace(/=+$/, '')) return true
      refusal = new HostKeyError(`host key mismatch for ${host}: it presents ${seen}, expected ${expected}. Someone may be intercepting the connection; check the host's key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it)`)
      return false
    }
    if (!policy.knownHostsFile) {
      refusal = new HostKeyError(`no way to verify ${host}'s key ${seen}: give --host-key ${seen} after checking it on the host, or a known_hosts file`)
      return false
    }
    const name = knownHostsName(host, port)
    const known = knownHostKeys(policy.knownHostsFile, name)
    if (known.some((k) => k.equals(key))) return true
    if (known.some((k) => keyType(k) === keyType(key))) {
      refusal = new HostKeyError(`host key mismatch for ${name}: it presents ${seen}, which is not the key ${policy.knownHostsFile} holds for it. Someone may be intercepting the connection; if the host was rebuilt, remove its line (ssh-keygen -R '${name}')`)
      return false
    }
    if (!policy.acceptNew) {
      refusal = new HostKeyError(`${name} is not in ${policy.knownHostsFile} (its key is ${seen}); check the key on the host, then pass --host-key ${seen} or --accept-new-host-key`)
      return false
    }
    appendFileSync(policy.knownHostsFile, `${name} ${keyType(key)} ${key.toString('base64')}\n`, { mode: 0o600 })
    return true
  }
  return { verify, refusal: () => refusal }
}

// --- connections ---------------------------------------------------------------------------------

export interface SshTarget {
  host: string
  port?: number
  username: string
  privateKey: string | Buffer
  hostKey: HostKeyPolicy
}

export class SshConnectError extends Error {}

/** An SSH connection to `target`, through `jump` (a bastion) when given; host keys checked on both. */
export async function connectSsh(target: SshTarget, jump?: SshTarget, timeoutMs = 20_000): Promise<SshClient> {
  let sock: ClientChannel | undefined
  let jumpClient: SshClient | undefined
  if (jump) {
    jumpClient = await connectSsh(jump, undefined, timeoutMs)
    const bastion = jumpClient
    sock = await new Promise<ClientChannel>((resolveStream, reject) => {
      bastion.forwardOut('127.0.0.1', 0, target.host, target.port ?? 22, (err, stream) => {
        if (err) reject(new SshConnectError(`the bastion ${jump.host} cannot reach ${target.host}:${target.port ?? 22}: ${err.message}`))
        else resolveStream(stream)
      })
    }).catch((err: unknown) => {
      bastion.end()
      throw err
    })
  }
  const port = target.port ?? 22
  const verifier = hostVerifier(target.host, port, target.hostKey)
  const client = new Client()
  const config: ConnectConfig = {
    host: target.host,
    port,
    username: target.username,
    privateKey: target.privateKey,
    readyTimeout: timeoutMs,
    hostVerifier: verifier.verify,
    ...(sock ? { sock } : {}),
  }
  try {
    await new Promise<void>((resolveReady, reject) => {
      client.once('ready', () => resolveReady())
      client.once('error', (err: Error & { level?: string }) => {
        const refused = verifier.refusal()
        if (refused) reject(refused)
        else if (err.level === 'client-authentication') reject(new SshConnectError(`${target.username}@${target.host} refused the key: ${err.message}; check --identity and the user's authorized_keys`))
        else reject(new SshConnectError(`cannot connect to ${target.host}:${port}: ${err.message}`))
      })
      client.connect(config)
    })
  } catch (err) {
    client.end()
    jumpClient?.end()
    throw err
  }
  if (jumpClient) client.once('close', () => jumpClient.end())
  return client
}

// --- commands and files --------------------------------------------------------------------------

export interface ExecResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `command`, streaming complete output lines to `onLine`. */
export function exec(client: SshClient, command: string, onLine?: (line: string, stream: 'stdout' | 'stderr') => void, input?: string): Promise<ExecResult> {
  return new Promise((resolveExec, reject) => {
    client.exec(command, (err, channel) => {
      if (err) return reject(err)
      let stdout = ''
      let stderr = ''
      const pending = { stdout: '', stderr: '' }
      const feed = (which: 'stdout' | 'stderr', chunk: Buffer) => {
        const text = chunk.toString('utf8')
        if (which === 'stdout') stdout += text
        else stderr += text
        if (!onLine) return
        pending[which] += text
        const lines = pending[which].split('\n')
        pending[which] = lines.pop() ?? ''
        for (const line of lines) onLine(line, which)
      }
      channel.on('data', (chunk: Buffer) => feed('stdout', chunk))
      channel.stderr.on('data', (chunk: Buffer) => feed('stderr', chunk))
      let code: number | null = null
      channel.on('exit', (exitCode: number | null) => { code = exitCode })
      channel.on('close', () => {
        if (onLine) for (const which of ['stdout', 'stderr'] as const) if (pending[which]) onLine(pending[which], which)
        resolveExec({ code, stdout, stderr })
      })
      channel.end(input)
    })
  })
}

function openSftp(client: SshClient): Promise<SFTPWrapper> {
  return new Promise((resolveSftp, reject) => client.sftp((err, sftp) => (err ? reject(err) : resolveSftp(sftp))))
}

const sftpCall = <T>(fn: (cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> =>
  new Promise((resolveCall, reject) => fn((err, value) => (err ? reject(err) : resolveCall(value as T))))

async function sha256Local(file: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash)
  return hash.digest('hex')
}

export interface StageInput {
  /** scripts/provision. */
  provisionDir: string
  /** dist/fleetmq-<version>-linux-<arch>.tar.gz; absent for phases that need none (leave). */
  bundleFile?: string
  /** node.env, from renderEnvFile(). */
  envText: string
  secrets?: Partial<Record<SecretName, string>>
}

export class ProvisionError extends Error {
  constructor(readonly step: string, message: string, readonly output: string) {
    super(message)
  }
}

/**
 * Uploads the stage. The folder is created by the SSH user with mode 0700 and must belong to it
 * (a folder someone else planted in /var/tmp is refused); the bundle is uploaded only when the
 * host does not hold the same bytes already.
 */
export async function uploadStage(client: SshClient, stage: StageInput, progress: (line: string) => void = () => {}): Promise<void> {
  const bundleName = stage.bundleFile ? basename(stage.bundleFile) : ''
  const prepare = await exec(client, [
    'set -eu', 'umask 077',
    `mkdir -p ${STAGE_DIR}`,
    `if [ -L ${STAGE_DIR} ] || [ ! -O ${STAGE_DIR} ]; then echo "${STAGE_DIR} belongs to someone else; remove it" >&2; exit 1; fi`,
    `chmod 0700 ${STAGE_DIR}`,
    `rm -rf ${STAGE_DIR}/provision`,
    `mkdir -p ${STAGE_DIR}/provision ${STAGE_DIR}/secrets`,
    ...(stage.bundleFile ? [`sha256sum ${STAGE_DIR}/${bundleName} 2>/dev/null | cut -d' ' -f1 || true`] : []),
  ].join('\n'))
  if (prepare.code !== 0) throw new ProvisionError('upload', `cannot prepare ${STAGE_DIR}: ${prepare.stderr.trim()}`, prepare.stderr)
  const sftp = await openSftp(client)
  try {
    const walk = async (local: string, remote: string): Promise<void> => {
      for (const entry of readdirSync(local, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const from = join(local, entry.name)
        const to = `${remote}/${entry.name}`
        if (entry.isDirectory()) {
          await sftpCall<void>((cb) => sftp.mkdir(to, { mode: 0o700 }, cb))
          await walk(from, to)
        } else if (entry.isFile()) {
          await sftpCall<void>((cb) => sftp.fastPut(from, to, { mode: statSync(from).mode & 0o755 }, cb))
        }
      }
    }
    progress('uploading scripts/provision')
    await walk(stage.provisionDir, `${STAGE_DIR}/provision`)

    if (stage.bundleFile) await uploadBundle(client, sftp, stage.bundleFile, prepare.stdout.trim(), progress)

    progress('uploading node.env and secrets')
    await sftpCall<void>((cb) => sftp.writeFile(`${STAGE_DIR}/node.env`, stage.envText, { mode: 0o600 }, cb))
    for (const [name, value] of Object.entries(stage.secrets ?? {})) {
      if (value === undefined) continue
      await sftpCall<void>((cb) => sftp.writeFile(`${STAGE_DIR}/secrets/${name}`, value, { mode: 0o600 }, cb))
    }
  } finally {
    sftp.end()
  }
}

/** The bundle, unless the host holds the same bytes (`remoteSum`) already; renamed into place whole. */
async function uploadBundle(client: SshClient, sftp: SFTPWrapper, bundleFile: string, remoteSum: string, progress: (line: string) => void): Promise<void> {
  const name = basename(bundleFile)
  if (remoteSum === (await sha256Local(bundleFile))) {
    progress(`${name} is already on the host`)
    return
  }
  progress(`uploading ${name} (${(statSync(bundleFile).size / 1_048_576).toFixed(1)} MiB)`)
  const partial = `${STAGE_DIR}/${name}.partial`
  await sftpCall<void>((cb) => sftp.fastPut(bundleFile, partial, { mode: 0o600 }, cb))
  const moved = await exec(client, `mv -f ${partial} ${STAGE_DIR}/${name}`)
  if (moved.code !== 0) throw new ProvisionError('upload', `cannot place the bundle: ${moved.stderr.trim()}`, moved.stderr)
}

export interface PhaseResult extends ExecResult {
  phase: ProvisionPhase
  ms: number
}

/** Runs one phase on a staged host; a failure throws ProvisionError naming the phase, with its output. */
export async function runPhase(client: SshClient, phase: ProvisionPhase, bundleFileName: string, onLine?: (line: string, stream: 'stdout' | 'stderr') => void): Promise<PhaseResult> {
  const started = Date.now()
  const result = await exec(client, phaseCommand(phase, bundleFileName), onLine)
  const ms = Date.now() - started
  if (result.code !== 0) {
    const output = `${result.stdout}${result.stderr}`.trim()
    const cause = result.stderr.split('\n').filter((l) => l.includes('error:')).pop() ?? `exit code ${result.code}`
    throw new ProvisionError(phase, `the ${phase} phase failed: ${cause.replace(/^\[fleetmq-provision \w+\] /, '')}`, output)
  }
  return { ...result, phase, ms }
}
