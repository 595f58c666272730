/*
 * The AMI stack's settings: the only place that reads stack config. Validation is in pure exported
 * functions with messages that name the key and the fix.
 */
import * as pulumi from '@pulumi/pulumi'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO_ROOT } from '../customize.js'

export type Architecture = 'x86_64' | 'arm64'

export interface AmiConfig {
  region: string
  version: string
  architecture: Architecture
  instanceType: string
  bundle: string
  regions: string[]
  launchPermissionAccounts: string[]
  public: boolean
  subnetId?: string
}

export interface RawAmiConfig {
  region: string
  bundle?: string
  architecture?: string
  instanceType?: string
  regions?: string[]
  launchPermissionAccounts?: string[]
  public?: boolean
  subnetId?: string
}

const GRAVITON = /^[a-z]+\d+g[a-z]*\./

/** Checks and completes the raw settings; throws one message listing every problem. */
export function resolveAmiConfig(raw: RawAmiConfig, version: string, repoRoot = REPO_ROOT): AmiConfig {
  const problems: string[] = []
  const architecture = (raw.architecture ?? 'x86_64') as Architecture
  if (architecture !== 'x86_64' && architecture !== 'arm64') problems.push(`architecture: "${raw.architecture}" must be x86_64 or arm64`)
  const instanceType = raw.instanceType ?? (architecture === 'arm64' ? 't4g.medium' : 't3.medium')
  if (GRAVITON.test(instanceType) !== (architecture === 'arm64')) {
    problems.push(`instanceType: ${instanceType} does not run ${architecture} images; use ${architecture === 'arm64' ? 't4g.medium' : 't3.medium'} or change architecture`)
  }
  const bundle = raw.bundle || join('dist', `fleetmq-${version}-linux-${architecture === 'arm64' ? 'arm64' : 'x64'}.tar.gz`)
  const bundlePath = join(repoRoot, bundle)
  if (!existsSync(bundlePath)) problems.push(`bundle: ${bundle} does not exist; build it with npm run bundle -- --arch ${architecture === 'arm64' ? 'arm64' : 'x64'}`)
  for (const account of raw.launchPermissionAccounts ?? []) {
    if (!/^\d{12}$/.test(account)) problems.push(`launchPermissionAccounts: "${account}" is not a 12-digit AWS account id`)
  }
  for (const region of raw.regions ?? []) {
    if (!/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(region)) problems.push(`regions: "${region}" is not an AWS region name (eu-west-1)`)
  }
  if (problems.length) throw new Error(`the AMI stack config is wrong:\n  ${problems.join('\n  ')}`)
  return {
    region: raw.region,
    version,
    architecture,
    instanceType,
    bundle: bundlePath,
    regions: [...new Set([raw.region, ...(raw.regions ?? [])])],
    launchPermissionAccounts: raw.launchPermissionAccounts ?? [],
    public: raw.public ?? false,
    ...(raw.subnetId ? { subnetId: raw.subnetId } : {}),
  }
}

/** Reads the stack config (Pulumi.yaml declares every key). */
export function loadAmiConfig(): AmiConfig {
  const config = new pulumi.Config()
  const region = new pulumi.Config('aws').require('region')
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version
  return resolveAmiConfig({
    region,
    bundle: config.get('bundle'),
    architecture: config.get('architecture'),
    instanceType: config.get('instanceType'),
    regions: config.getObject<string[]>('regions'),
    launchPermissionAccounts: config.getObject<string[]>('launchPermissionAccounts'),
    public: config.getBoolean('public'),
    subnetId: config.get('subnetId'),
  }, version)
}
