/*
 * scripts/join-node: adds a host to a running FleetMQ cluster over SSH, or takes it out (--leave).
 *
 *   scripts/join-node --host admin@10.0.1.14 --seed 10.0.1.10 --cluster-secret-file cluster.secret \
 *     --redis-password-file redis.password [--identity KEY] [--jump admin@bastion] [--bundle FILE]
 *
 * It verifies the host key (known_hosts, or --host-key SHA256:...; an unknown key is refused
 * unless --accept-new-host-key), checks from the new host that the seed answers, uploads
 * scripts/provision and the bundle like `pulumi up` does, and runs install, configure and join,
 * one progress line per step. It ends when the node is healthy in `fleetmq cluster status` and
 * listens for MQTT. Running it again is harmless. A failure names the step and shows its output;
 * nothing is done to the running cluster before the join step, and join changes only this node.
 */
import { Command, Option } from 'commander'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { Client as SshClient } from 'ssh2'
import { renderNodeEnv } from '../infra/node-env.js'
import { bundleName, REPO_ROOT, type BundleArch } from './bundle.js'
import {
  connectSsh, exec, HostKeyError, ProvisionError, runPhase, SshConnectError, uploadStage,
  type HostKeyPolicy, type ProvisionPhase, type SecretName, type SshTarget,
} from './lib/remote-provision.js'

const MGMT_PORT = 18083
const MQTT_PORT = 1883

export interface JoinNodeOptions {
  host: string
  seed: string
  identity?: string
  jump?: string
  bundle?: string
  leave?: boolean
  hostKey?: string
  acceptNewHostKey?: boolean
  knownHosts: string
  clusterSecretFile?: string
  redisPasswordFile?: string
  adminPasswordFile?: string
  clusterName: string
  name?: string
  redis: 'replica' | 'external'
  connectTimeout: string
  /** Comma-separated addresses or CIDRs of the cluster's members (the new host's firewall admits them). */
  peers?: string
  /** Comma-separated CIDRs the load balancer connects from (the plaintext listener is closed to others). */
  plaintextFrom?: string
}

/** `a,b c` → ['a', 'b', 'c']; each an IPv4/IPv6 address or CIDR, else a UsageError naming the flag. */
export function parseNetworks(flag: string, value: string | undefined): string[] {
  const items = (value ?? '').split(/[\s,]+/).filter(Boolean)
  for (const item of items) {
    if (!/^(\d{1,3}(\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)(\/\d{1,3})?$/.test(item)) {
      throw new UsageError(`${flag} ${item}: expected IP addresses or CIDRs separated by commas, e.g. 10.0.32.0/19,10.0.64.0/19`)
    }
  }
  return items
}

export class UsageError extends Error {}

/** `user@host[:port]` → its parts; throws naming the flag when malformed. */
export function parseUserHost(flag: string, value: string): { username: string; host: string; port: number } {
  const match = value.match(/^([A-Za-z0-9._-]+)@(\[[^\]]+\]|[^:@\s]+)(?::(\d{1,5}))?$/)
  if (!match) throw new UsageError(`${flag} ${value}: expected USER@ADDRESS (for example admin@10.0.1.14)`)
  return { username: match[1], host: match[2].replace(/^\[|\]$/g, ''), port: match[3] ? Number(match[3]) : 22 }
}

/** The seed's management API `host:port` (18083 unless given). */
export function parseSeed(value: string): { host: string; port: number; address: string } {
  const match = value.match(/^([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?$/)
  if (!match) throw new UsageError(`--seed ${value}: expected ADDRESS or ADDRESS:PORT of a cluster member's management API`)
  const port = match[2] ? Number(match[2]) : MGMT_PORT
  return { host: match[1], port, address: `${match[1]}:${port}` }
}

/** A node name from the host's address: node-10-0-1-14. */
export const defaultNodeName = (host: string): string => `node-${host.replace(/[^A-Za-z0-9]+/g, '-')}`

function readSecret(flag: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined
  if (!existsSync(file)) throw new UsageError(`${flag} ${file}: no such file`)
  return readFileSync(file, 'utf8').trim()
}

function defaultIdentity(): string {
  for (const name of ['id_ed25519', 'id_ecdsa', 'id_rsa']) {
    const file = join(homedir(), '.ssh', name)
    if (existsSync(file)) return file
  }
  throw new UsageError('no SSH key found in ~/.ssh (id_ed25519, id_ecdsa, id_rsa); give one with --identity KEY')
}

type Print = (line: string) => void

/** One step: a line when it starts, one when it ends (with its duration), its output on failure. */
async function step<T>(print: Print, label: string, action: () => Promise<T>): Promise<T> {
  const started = Date.now()
  print(`==> ${label}`)
  const result = await action()
  print(`    ok (${((Date.now() - started) / 1000).toFixed(1)} s)`)
  return result
}

async function remoteArch(client: SshClient): Promise<BundleArch> {
  const machine = (await exec(client, 'uname -m')).stdout.trim()
  if (machine === 'x86_64') return 'x64'
  if (machine === 'aarch64') return 'arm64'
  throw new ProvisionError('connect', `the host is a ${machine} machine; FleetMQ bundles exist for x86_64 and aarch64`, machine)
}

/** Fails before anything changes when the new host cannot reach the seed's management API. */
async function checkSeedReachable(client: SshClient, seed: { host: string; port: number; address: string }): Promise<void> {
  const probe = await exec(client, `timeout 5 bash -c 'exec 3<>/dev/tcp/${seed.host}/${seed.port}' 2>&1`)
  if (probe.code !== 0) {
    throw new ProvisionError('preflight', `the host cannot reach the seed's management API at ${seed.address}; check --seed and that the security group admits port ${seed.port} between brokers (nothing was changed)`, probe.stdout)
  }
}

async function checkServesMqtt(client: SshClient): Promise<void> {
  const listening = await exec(client, `ss -Hltn 'sport = :${MQTT_PORT}'`)
  if (!listening.stdout.trim()) throw new ProvisionError('verify', `the node is in the cluster but nothing listens on port ${MQTT_PORT}`, listening.stdout)
}

export async function joinNode(options: JoinNodeOptions, print: Print = (line) => process.stdout.write(`${line}\n`)): Promise<void> {
  const target = parseUserHost('--host', options.host)
  const seed = parseSeed(options.seed)
  const privateKey = readFileSync(options.identity ?? defaultIdentity())
  const hostKey: HostKeyPolicy = options.hostKey
    ? { fingerprint: options.hostKey }
    : { knownHostsFile: options.knownHosts, acceptNew: options.acceptNewHostKey ?? false }
  const secrets: Partial<Record<SecretName, string>> = {}
  if (!options.leave) {
    const clusterSecret = readSecret('--cluster-secret-file', options.clusterSecretFile)
    if (!clusterSecret) throw new UsageError('--cluster-secret-file FILE is required to join: the seed only gives the cluster descriptor to holders of the cluster secret')
    secrets['cluster-secret'] = clusterSecret
    const redisPassword = readSecret('--redis-password-file', options.redisPasswordFile)
    if (options.redis === 'replica' && !redisPassword) throw new UsageError('--redis-password-file FILE is required with --redis replica: the co-located Redis replica authenticates to the primary')
    if (redisPassword) secrets['redis-password'] = redisPassword
    const adminPassword = readSecret('--admin-password-file', options.adminPasswordFile)
    if (adminPassword) secrets['admin-password'] = adminPassword
  }
  const jump = options.jump ? parseUserHost('--jump', options.jump) : undefined
  const timeoutMs = Number(options.connectTimeout) * 1000
  const sshTarget: SshTarget = { ...target, privateKey, hostKey }
  const jumpTarget: SshTarget | undefined = jump ? { ...jump, privateKey, hostKey } : undefined

  const client = await step(print, `connect to ${target.username}@${target.host}${jump ? ` through ${jump.host}` : ''}`, () => connectSsh(sshTarget, jumpTarget, timeoutMs))
  try {
    const nodeName = options.name ?? defaultNodeName(target.host)
    const envText = renderNodeEnv({
      clusterName: options.clusterName, nodeNumber: 2, nodeName, advertiseAddress: target.host, seedAddress: seed.host,
      redis: options.redis === 'external' ? { kind: 'elasticache', host: seed.host, port: 6379 } : { kind: 'colocated' }, wss: false,
      peers: parseNetworks('--peers', options.peers), plaintextFrom: parseNetworks('--plaintext-from', options.plaintextFrom),
    })
    if (options.leave) {
      await step(print, 'upload scripts/provision', () => uploadStage(client, { provisionDir: join(REPO_ROOT, 'scripts/provision'), envText }, (line) => print(`    ${line}`)))
      await runStep(client, print, 'leave', '')
      print(`${nodeName} (${target.host}) has left the cluster`)
      return
    }
    const arch = await remoteArch(client)
    const bundleFile = options.bundle ?? join(REPO_ROOT, 'dist', `${bundleName(packageVersion(), arch)}.tar.gz`)
    if (!existsSync(bundleFile)) throw new UsageError(`${bundleFile} does not exist; run npm run bundle -- --arch ${arch}, or give --bundle FILE`)
    await step(print, `check that the host reaches the seed ${seed.address}`, () => checkSeedReachable(client, seed))
    await step(print, 'upload scripts/provision, the bundle, node.env and secrets', () =>
      uploadStage(client, { provisionDir: join(REPO_ROOT, 'scripts/provision'), bundleFile, envText, secrets }, (line) => print(`    ${line}`)))
    const bundle = bundleFile.split('/').pop() as string
    for (const phase of ['install', 'configure', 'join'] as const) await runStep(client, print, phase, bundle)
    await step(print, `check that the node serves MQTT on port ${MQTT_PORT}`, () => checkServesMqtt(client))
    print(`${nodeName} (${target.host}) is a healthy member of the cluster and serves MQTT on port ${MQTT_PORT}`)
  } finally {
    client.end()
  }
}

async function runStep(client: SshClient, print: Print, phase: ProvisionPhase, bundle: string): Promise<void> {
  await step(print, `${phase}`, () =>
    runPhase(client, phase, bundle, (line) => print(`    ${line.replace(/^\[fleetmq-provision \w+\] /, '')}`)))
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version
}

export function buildProgram(): Command {
  return new Command('join-node')
    .description('add a host to a running FleetMQ cluster over SSH (install, configure, join), or take it out with --leave')
    .requiredOption('--host <user@addr>', 'the new node (SSH login with sudo)')
    .requiredOption('--seed <addr[:port]>', `a cluster member's management API (port ${MGMT_PORT} unless given)`)
    .option('--identity <key>', 'SSH private key (default ~/.ssh/id_ed25519, id_ecdsa or id_rsa)')
    .option('--jump <user@bastion>', 'reach the host through this bastion (same key, host key checked too)')
    .option('--bundle <file>', 'bundle to install (default dist/fleetmq-<version>-linux-<arch of the host>.tar.gz)')
    .option('--leave', 'drain the node and take it out of the cluster instead')
    .option('--host-key <SHA256:...>', 'the host key fingerprint to accept (instead of known_hosts)')
    .option('--accept-new-host-key', 'trust a host missing from known_hosts and add it (a changed key is still refused)')
    .option('--known-hosts <file>', 'known_hosts file', join(homedir(), '.ssh', 'known_hosts'))
    .option('--cluster-secret-file <file>', 'the cluster secret (required to join)')
    .option('--redis-password-file <file>', 'the Redis password (required with --redis replica)')
    .option('--admin-password-file <file>', 'password of the admin user on the new node')
    .option('--cluster-name <name>', 'the cluster name', 'fleetmq')
    .option('--name <node>', 'the node name (default node-<address>)')
    .addOption(new Option('--redis <role>', 'Redis on the new host: a co-located replica and Sentinel, or none (a managed Redis)').choices(['replica', 'external']).default('replica'))
    .option('--connect-timeout <seconds>', 'SSH connection timeout', '20')
    .option('--peers <list>', 'addresses or CIDRs of the cluster\'s members, comma-separated: the new host\'s firewall admits management, Redis and Sentinel from these (and the seed) only')
    .option('--plaintext-from <list>', 'CIDRs the load balancer connects from: the new host\'s firewall admits MQTT on 1883 (PROXY v2) from these only')
    .action(async (options: JoinNodeOptions) => {
      await joinNode(options)
    })
}

export function reportFailure(err: unknown): never {
  if (err instanceof ProvisionError) {
    process.stderr.write(`join-node: step "${err.step}" failed: ${err.message}\n`)
    if (err.output.trim()) process.stderr.write(`--- output of ${err.step} ---\n${err.output.trim()}\n`)
  } else if (err instanceof UsageError || err instanceof HostKeyError || err instanceof SshConnectError) {
    process.stderr.write(`join-node: ${err.message}\n`)
  } else {
    process.stderr.write(`join-node: ${(err as Error).message ?? String(err)}\n`)
  }
  process.exit(1)
}

buildProgram().parseAsync(process.argv).catch(reportFailure)
