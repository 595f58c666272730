/*
 * The only module that reads stack config. `loadStackConfig()` returns one typed, validated,
 * frozen object; every bad value fails here, before any resource is planned, with a message that
 * names the key and what it accepts. The parsing itself is pure (`parseStackConfig`) so it is
 * tested table-driven without Pulumi.
 */
import { existsSync, readFileSync } from 'node:fs'
import { basename, isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as pulumi from '@pulumi/pulumi'
import { PROVISION_ENTRY_POINT } from '../scripts/lib/phase-command.js'

/** The repository root: `infra/..`. Relative paths in config are relative to it. */
export const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))

/** Every project config key, as declared in `Pulumi.yaml` (a test keeps the two in step). */
export const CONFIG_KEYS = [
  'nodeCount',
  'instanceType',
  'azCount',
  'mqttAllowedCidrs',
  'adminCidr',
  'certificateArn',
  'domainName',
  'hostedZoneId',
  'redis',
  'elasticacheNodeType',
  'ami',
  'natGateways',
  'wss',
  'vpcFlowLogs',
  'nlbAccessLogs',
  'bastionInstanceType',
  'sshUser',
  'bundlePath',
  'provisionDir',
] as const
export type ConfigKey = (typeof CONFIG_KEYS)[number]

/** Defaults of the keys that have one; the same values are declared in `Pulumi.yaml`. */
export const CONFIG_DEFAULTS = Object.freeze({
  nodeCount: 3,
  /** 2 vCPU, 4 GiB: the broker and a co-located Redis + Sentinel. */
  instanceType: 't3.medium',
  azCount: 3,
  mqttAllowedCidrs: Object.freeze(['0.0.0.0/0']),
  redis: 'colocated',
  elasticacheNodeType: 'cache.t4g.small',
  /** `debian-12`: the official Debian 12 AMI of the region (owner 136693071363). */
  ami: 'debian-12',
  natGateways: 'single',
  wss: false,
  /** VPC flow logs (every accepted and rejected connection) into the stack's log bucket. */
  vpcFlowLogs: false,
  /** NLB access logs (one line per TLS connection) into the stack's log bucket. */
  nlbAccessLogs: false,
  bastionInstanceType: 't4g.nano',
  /** The login user of the Debian cloud images (and of the images built by `images/aws`). */
  sshUser: 'admin',
  provisionDir: 'scripts/provision',
} satisfies Partial<Record<ConfigKey, unknown>>)

export const REDIS_MODES = ['colocated', 'elasticache'] as const
export const NAT_GATEWAY_MODES = ['single', 'perAz'] as const
export const DEBIAN_AMI = 'debian-12'
export const MAX_NODES = 20
export const MAX_AZS = 6

export type Architecture = 'x86_64' | 'arm64'

export type CertificateSource =
  /** A certificate already in ACM; `domainName` names the endpoint, `hostedZoneId` gets an alias record. */
  | { kind: 'arn'; arn: string; domainName?: string; hostedZoneId?: string }
  /** An ACM certificate for `domainName`, validated by DNS in `hostedZoneId`, plus an alias record. */
  | { kind: 'acm-dns'; domainName: string; hostedZoneId: string }
  /** A private CA and a server certificate made by Pulumi and imported into ACM: for testing. */
  | { kind: 'self-signed' }

export interface StackConfig {
  /** Prefix of every resource name. */
  readonly name: string
  readonly region: string
  readonly partition: 'aws' | 'aws-cn' | 'aws-us-gov'
  readonly nodeCount: number
  readonly instanceType: string
  readonly architecture: Architecture
  readonly azCount: number
  readonly mqttAllowedCidrs: readonly string[]
  readonly adminCidr: string
  readonly certificate: CertificateSource
  readonly redis: { kind: 'colocated' } | { kind: 'elasticache'; nodeType: string }
  readonly ami: { kind: 'debian-12' } | { kind: 'id'; id: string }
  readonly natGateways: (typeof NAT_GATEWAY_MODES)[number]
  readonly wss: boolean
  readonly vpcFlowLogs: boolean
  readonly nlbAccessLogs: boolean
  readonly bastionInstanceType: string
  readonly bastionArchitecture: Architecture
  readonly sshUser: string
  /** Absolute path of the broker bundle uploaded to every node. */
  readonly bundlePath: string
  readonly bundleFileName: string
  /** Absolute path of `scripts/provision`, uploaded whole. */
  readonly provisionDir: string
}

/** Raw config as Pulumi hands it over: strings (arrays as JSON text), absent keys undefined. */
export type RawStackConfig = Partial<Record<ConfigKey | 'aws:region', string>>

export class StackConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`the stack config is invalid; fix these keys (pulumi config set KEY VALUE):\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'StackConfigError'
  }
}

/** Graviton families (t4g, m7g, c7gn, r8g, x2gd, im4gn, hpc7g, a1, ...) take the arm64 bundle. */
export function architectureOf(instanceType: string): Architecture {
  const family = instanceType.split('.')[0]
  return family === 'a1' || /^[a-z]+\d+g/.test(family) ? 'arm64' : 'x86_64'
}

/** `dist/fleetmq-<version>-linux-<x64|arm64>.tar.gz`, as `npm run bundle` names it. */
export function bundleFileName(version: string, architecture: Architecture): string {
  return `fleetmq-${version}-linux-${architecture === 'arm64' ? 'arm64' : 'x64'}.tar.gz`
}

export function partitionOf(region: string): StackConfig['partition'] {
  if (region.startsWith('cn-')) return 'aws-cn'
  if (region.startsWith('us-gov-')) return 'aws-us-gov'
  return 'aws'
}

/** An IPv4 CIDR in canonical form (no host bits set), or a message saying what is wrong. */
export function checkIpv4Cidr(text: string): string | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text)
  if (!match) return `"${text}" is not an IPv4 CIDR such as 203.0.113.7/32`
  const octets = match.slice(1, 5).map(Number)
  const prefix = Number(match[5])
  if (octets.some((o) => o > 255) || prefix > 32) return `"${text}" is not an IPv4 CIDR such as 203.0.113.7/32`
  const address = octets.reduce((acc, o) => acc * 256 + o, 0)
  const size = 2 ** (32 - prefix)
  if (address % size !== 0) {
    const network = address - (address % size)
    const canonical = [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.')
    return `"${text}" has host bits set; AWS wants the network address: ${canonical}/${prefix}`
  }
  return undefined
}

const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|\d*xlarge|metal(-\d+xl)?)$/
const REGION = /^[a-z]{2}(-gov)?-[a-z]+-\d+$/
const AMI_ID = /^ami-([0-9a-f]{8}|[0-9a-f]{17})$/
const HOSTED_ZONE_ID = /^Z[A-Z0-9]{1,32}$/
const CERTIFICATE_ARN = /^arn:(aws|aws-cn|aws-us-gov):acm:([a-z0-9-]+):\d{12}:certificate\/[0-9a-f-]{36}$/
const ELASTICACHE_NODE_TYPE = /^cache\.[a-z0-9]+\.[a-z0-9]+$/
const LINUX_USER = /^[a-z_][a-z0-9_-]{0,31}$/
const DOMAIN_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/

function checkDomainName(name: string): string | undefined {
  const labels = name.split('.')
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => DOMAIN_LABEL.test(l))) {
    return `"${name}" is not a lower-case DNS name such as mqtt.example.com (no wildcard)`
  }
  return undefined
}

export interface ParseContext {
  /** `version` of package.json: names the bundle. */
  packageVersion: string
  /** Where relative paths resolve from. */
  repoRoot: string
  /** Prefix of resource names (the project name). */
  name?: string
}

/**
 * Validates raw config and returns the typed stack config. Collects every problem before
 * throwing, so one run shows all of them.
 */
export function parseStackConfig(raw: RawStackConfig, context: ParseContext): StackConfig {
  const problems: string[] = []
  const problem = (key: string, message: string): void => {
    problems.push(`${key}: ${message}`)
  }
  const text = (key: ConfigKey): string | undefined => {
    const value = raw[key]?.trim()
    return value === undefined || value === '' ? undefined : value
  }
  const integer = (key: ConfigKey, fallback: number, min: number, max: number): number => {
    const value = text(key)
    if (value === undefined) return fallback
    const parsed = /^\d+$/.test(value) ? Number(value) : Number.NaN
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      problem(key, `"${value}" is not allowed; use a whole number from ${min} to ${max}`)
      return fallback
    }
    return parsed
  }
  const oneOf = <T extends string>(key: ConfigKey, allowed: readonly T[], fallback: T): T => {
    const value = text(key) ?? fallback
    if (!(allowed as readonly string[]).includes(value)) {
      problem(key, `"${value}" is not allowed; use one of ${allowed.join(', ')}`)
      return fallback
    }
    return value as T
  }

  const region = raw['aws:region']?.trim() ?? ''
  if (region === '') problem('aws:region', 'is required; pulumi config set aws:region eu-west-1 (any AWS region)')
  else if (!REGION.test(region)) problem('aws:region', `"${region}" is not an AWS region name such as eu-west-1`)

  const redisMode = oneOf('redis', REDIS_MODES, CONFIG_DEFAULTS.redis)
  const nodeCount = integer('nodeCount', CONFIG_DEFAULTS.nodeCount, 1, MAX_NODES)
  if (nodeCount === 2 && redisMode === 'colocated') {
    problem('nodeCount', '2 with redis colocated cannot survive the loss of a node (Sentinel needs a majority of 3); use 1, 3 or more, or redis elasticache')
  }
  const azCount = integer('azCount', CONFIG_DEFAULTS.azCount, 1, MAX_AZS)

  const instanceType = text('instanceType') ?? CONFIG_DEFAULTS.instanceType
  if (!INSTANCE_TYPE.test(instanceType) || instanceType.startsWith('mac')) {
    problem('instanceType', `"${instanceType}" is not an EC2 instance type that runs Debian, such as t3.medium, m7i.large or m7g.large (Graviton)`)
  } else if (/\.(nano|micro)$/.test(instanceType)) {
    problem('instanceType', `"${instanceType}" has too little memory for the broker and Redis; use at least a .small (2 GiB), e.g. t3.medium`)
  }
  const bastionInstanceType = text('bastionInstanceType') ?? CONFIG_DEFAULTS.bastionInstanceType
  if (!INSTANCE_TYPE.test(bastionInstanceType) || bastionInstanceType.startsWith('mac')) {
    problem('bastionInstanceType', `"${bastionInstanceType}" is not an EC2 instance type, such as t4g.nano or t3.micro`)
  }

  let mqttAllowedCidrs: string[] = [...CONFIG_DEFAULTS.mqttAllowedCidrs]
  const cidrsText = text('mqttAllowedCidrs')
  if (cidrsText !== undefined) {
    let parsed: unknown
    try {
      parsed = JSON.parse(cidrsText)
    } catch {
      parsed = undefined
    }
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((c): c is string => typeof c === 'string')) {
      problem('mqttAllowedCidrs', 'must be a non-empty list of IPv4 CIDRs: pulumi config set --path \'mqttAllowedCidrs[0]\' 203.0.113.0/24')
    } else {
      for (const cidr of parsed) {
        const error = checkIpv4Cidr(cidr)
        if (error) problem('mqttAllowedCidrs', error)
      }
      mqttAllowedCidrs = [...new Set(parsed)]
    }
  }

  const adminCidr = text('adminCidr') ?? ''
  if (adminCidr === '') {
    problem('adminCidr', 'is required: the addresses that may SSH to the bastion, e.g. your public IP as 203.0.113.7/32')
  } else {
    const error = checkIpv4Cidr(adminCidr)
    if (error) problem('adminCidr', error)
    else if (adminCidr.endsWith('/0')) problem('adminCidr', 'must not be the whole internet; use your own address range, e.g. 203.0.113.7/32')
  }

  const certificateArn = text('certificateArn')
  const domainName = text('domainName')
  const hostedZoneId = text('hostedZoneId')
  if (certificateArn !== undefined) {
    const match = CERTIFICATE_ARN.exec(certificateArn)
    if (!match) problem('certificateArn', `"${certificateArn}" is not an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)`)
    else if (region !== '' && match[2] !== region) {
      problem('certificateArn', `is in ${match[2]} but the stack deploys to ${region}; the NLB needs a certificate from its own region`)
    }
  }
  if (domainName !== undefined) {
    const error = checkDomainName(domainName)
    if (error) problem('domainName', error)
  }
  if (hostedZoneId !== undefined) {
    if (!HOSTED_ZONE_ID.test(hostedZoneId)) problem('hostedZoneId', `"${hostedZoneId}" is not a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ`)
    if (domainName === undefined) problem('hostedZoneId', 'needs domainName: the name to create in that zone')
  }
  if (domainName !== undefined && hostedZoneId === undefined && certificateArn === undefined) {
    problem('domainName', 'needs hostedZoneId (to validate an ACM certificate by DNS) or certificateArn (a certificate you already have)')
  }
  let certificate: CertificateSource = { kind: 'self-signed' }
  if (certificateArn !== undefined) certificate = { kind: 'arn', arn: certificateArn, domainName, hostedZoneId }
  else if (domainName !== undefined && hostedZoneId !== undefined) certificate = { kind: 'acm-dns', domainName, hostedZoneId }

  const elasticacheNodeType = text('elasticacheNodeType') ?? CONFIG_DEFAULTS.elasticacheNodeType
  if (!ELASTICACHE_NODE_TYPE.test(elasticacheNodeType)) {
    problem('elasticacheNodeType', `"${elasticacheNodeType}" is not an ElastiCache node type such as cache.t4g.small or cache.r7g.large`)
  }

  const amiText = text('ami') ?? CONFIG_DEFAULTS.ami
  if (amiText !== DEBIAN_AMI && !AMI_ID.test(amiText)) {
    problem('ami', `"${amiText}" is not allowed; use ${DEBIAN_AMI} (the official Debian 12 AMI) or an AMI id such as ami-0123456789abcdef0 built by images/aws`)
  }

  const natGateways = oneOf('natGateways', NAT_GATEWAY_MODES, CONFIG_DEFAULTS.natGateways as 'single')

  const flag = (key: 'wss' | 'vpcFlowLogs' | 'nlbAccessLogs'): boolean => {
    const value = text(key) ?? String(CONFIG_DEFAULTS[key])
    if (value !== 'true' && value !== 'false') problem(key, `"${value}" is not allowed; use true or false`)
    return value === 'true'
  }
  const wss = flag('wss')
  const vpcFlowLogs = flag('vpcFlowLogs')
  const nlbAccessLogs = flag('nlbAccessLogs')

  const sshUser = text('sshUser') ?? CONFIG_DEFAULTS.sshUser
  if (!LINUX_USER.test(sshUser)) problem('sshUser', `"${sshUser}" is not a Linux user name such as admin`)

  const architecture = architectureOf(instanceType)
  const bundleText = text('bundlePath')
  if (bundleText !== undefined && !bundleText.endsWith('.tar.gz')) {
    problem('bundlePath', `"${bundleText}" is not a .tar.gz bundle; leave it unset to use the one npm run bundle writes in dist/`)
  }
  const bundlePath = resolve(context.repoRoot, bundleText ?? join('dist', bundleFileName(context.packageVersion, architecture)))

  const provisionText = text('provisionDir') ?? CONFIG_DEFAULTS.provisionDir
  const provisionDir = isAbsolute(provisionText) ? provisionText : resolve(context.repoRoot, provisionText)
  if (basename(provisionDir) !== 'provision') {
    problem('provisionDir', `"${provisionText}" must be a folder named provision (it is uploaded as <stage>/provision)`)
  }

  if (problems.length > 0) throw new StackConfigError(problems)

  const config: StackConfig = {
    name: context.name ?? 'fleetmq',
    region,
    partition: partitionOf(region),
    nodeCount,
    instanceType,
    architecture,
    azCount,
    mqttAllowedCidrs: Object.freeze(mqttAllowedCidrs),
    adminCidr,
    certificate: Object.freeze(certificate),
    redis: redisMode === 'elasticache' ? { kind: 'elasticache', nodeType: elasticacheNodeType } : { kind: 'colocated' },
    ami: amiText === DEBIAN_AMI ? { kind: 'debian-12' } : { kind: 'id', id: amiText },
    natGateways,
    wss,
    vpcFlowLogs,
    nlbAccessLogs,
    bastionInstanceType,
    bastionArchitecture: architectureOf(bastionInstanceType),
    sshUser,
    bundlePath,
    bundleFileName: basename(bundlePath),
    provisionDir,
  }
  return Object.freeze(config)
}

/** The provisioning entry point inside `provisionDir` (defined beside the phase command). */
export { PROVISION_ENTRY_POINT }

/** Fails, naming what to run, when a file `pulumi up` uploads is missing. */
export function checkDeployFiles(config: Pick<StackConfig, 'bundlePath' | 'provisionDir'>, exists: (path: string) => boolean = existsSync): void {
  const problems: string[] = []
  if (!exists(config.bundlePath)) {
    problems.push(`bundlePath: ${config.bundlePath} does not exist; run npm run bundle first (or set bundlePath to a bundle you built)`)
  }
  const entryPoint = join(config.provisionDir, PROVISION_ENTRY_POINT)
  if (!exists(entryPoint)) {
    problems.push(`provisionDir: ${entryPoint} does not exist; provisionDir must be the scripts/provision folder of this repository`)
  }
  if (problems.length > 0) throw new StackConfigError(problems)
}

/** Reads, validates and freezes the stack config. */
export function loadStackConfig(): StackConfig {
  const project = new pulumi.Config()
  const raw: RawStackConfig = { 'aws:region': new pulumi.Config('aws').get('region') }
  for (const key of CONFIG_KEYS) raw[key] = project.get(key)
  const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }
  const config = parseStackConfig(raw, { packageVersion: packageJson.version, repoRoot: REPO_ROOT, name: pulumi.getProject() })
  checkDeployFiles(config)
  return config
}
