/*
 * Runs the Pulumi program under mocks and records what it plans. Call `runProgram` once per
 * process: the program is an ES module and Node imports it once. Mocks answer only the resource
 * types and invokes the program is known to use, and throw on anything else.
 */
import { mkdtempSync, mkdirSync, existsSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as pulumi from '@pulumi/pulumi'

export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const REAL_PROVISION_DIR = join(REPO_ROOT, 'scripts', 'provision')
export const REGION = 'eu-west-1'
export const ZONES = ['eu-west-1a', 'eu-west-1b', 'eu-west-1c']
export const DEBIAN_OWNER = '136693071363'

export interface RecordedResource {
  type: string
  name: string
  inputs: Record<string, any>
  /** Name of the parent resource, from the resource options. */
  parent?: string
  /** Names of the resources in `dependsOn`. */
  dependsOn: string[]
  ignoreChanges: string[]
  /** `protect` in the resource options: `pulumi destroy` stops at it. */
  protect: boolean
  /** What the mock answered: inputs plus the computed outputs. */
  state: Record<string, any>
}

export interface RecordedCall {
  token: string
  inputs: Record<string, any>
}

export interface ProgramRun {
  resources: RecordedResource[]
  calls: RecordedCall[]
  outputs: Record<string, unknown>
  secretOutputs: Set<string>
  warnings: string[]
  fixture: Fixture
}

export interface Fixture {
  bundlePath: string
  provisionDir: string
  /** True when the repository's scripts/provision has its entry point and is used as is. */
  realProvisionDir: boolean
}

/**
 * A small bundle in a temporary folder, and the provisioning folder: the repository's own when its
 * entry point exists, otherwise a stand-in with the same entry point name (the scripts are written
 * by another part of the project and may not exist yet).
 */
export function makeFixture(bundleName = 'fleetmq-0.0.0-test-linux-x64.tar.gz'): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-infra-'))
  const bundlePath = join(dir, bundleName)
  writeFileSync(bundlePath, 'not really a tarball: the mocks never upload it\n')
  if (existsSync(join(REAL_PROVISION_DIR, 'fleetmq-provision'))) {
    return { bundlePath, provisionDir: REAL_PROVISION_DIR, realProvisionDir: true }
  }
  const provisionDir = join(dir, 'provision')
  mkdirSync(join(provisionDir, 'lib'), { recursive: true })
  writeFileSync(join(provisionDir, 'fleetmq-provision'), '#!/usr/bin/env bash\nset -Eeuo pipefail\n')
  writeFileSync(join(provisionDir, 'lib', 'common.sh'), '# stand-in\n')
  return { bundlePath, provisionDir, realProvisionDir: false }
}

let counter = 0
const next = (): number => ++counter

/** Outputs a real provider would compute, per resource type; a type missing here fails the test. */
const RESOURCE_OUTPUTS: Record<string, (name: string, inputs: Record<string, any>) => Record<string, unknown>> = {
  'pulumi:pulumi:Stack': () => ({}),
  'aws:ec2/vpc:Vpc': () => ({ arn: 'arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1' }),
  'aws:ec2/internetGateway:InternetGateway': () => ({}),
  'aws:ec2/routeTable:RouteTable': () => ({}),
  'aws:ec2/routeTableAssociation:RouteTableAssociation': () => ({}),
  'aws:ec2/subnet:Subnet': () => ({}),
  'aws:ec2/eip:Eip': () => {
    const n = next()
    return { publicIp: `198.51.100.${n}`, allocationId: `eipalloc-${n}` }
  },
  'aws:ec2/natGateway:NatGateway': () => ({}),
  'aws:ec2/defaultSecurityGroup:DefaultSecurityGroup': () => ({}),
  'aws:ec2/flowLog:FlowLog': () => ({}),
  'aws:s3/bucket:Bucket': (name) => ({ bucket: `${name}-bucket`, arn: `arn:aws:s3:::${name}-bucket` }),
  'aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock': () => ({}),
  'aws:s3/bucketOwnershipControls:BucketOwnershipControls': () => ({}),
  'aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration': () => ({}),
  'aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration': () => ({}),
  'aws:s3/bucketPolicy:BucketPolicy': () => ({}),
  'aws:ec2/securityGroup:SecurityGroup': () => ({}),
  'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule': () => ({}),
  'aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule': () => ({}),
  'aws:ec2/keyPair:KeyPair': (name) => ({ keyName: `${name}-key` }),
  'aws:ec2/instance:Instance': (_name, inputs) => {
    const n = next()
    return { privateIp: `10.0.${32 + n}.10`, publicIp: inputs.associatePublicIpAddress ? `203.0.113.${n}` : '' }
  },
  'aws:iam/role:Role': (name) => ({ name: `${name}-x`, arn: `arn:aws:iam::123456789012:role/${name}` }),
  'aws:iam/rolePolicyAttachment:RolePolicyAttachment': () => ({}),
  'aws:iam/instanceProfile:InstanceProfile': (name) => ({ name: `${name}-x` }),
  'aws:lb/loadBalancer:LoadBalancer': (name) => ({
    arn: `arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/${name}/1`,
    dnsName: `${name}-0123456789.elb.eu-west-1.amazonaws.com`,
    zoneId: 'Z2IFOLAFXWLO4F',
  }),
  'aws:lb/targetGroup:TargetGroup': (name) => ({ arn: `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/${name}/1` }),
  'aws:lb/listener:Listener': () => ({}),
  'aws:lb/targetGroupAttachment:TargetGroupAttachment': () => ({}),
  'aws:acm/certificate:Certificate': (name, inputs) => ({
    arn: `arn:aws:acm:eu-west-1:123456789012:certificate/${name}`,
    domainValidationOptions: inputs.domainName
      ? [{ domainName: inputs.domainName, resourceRecordName: `_x.${inputs.domainName}.`, resourceRecordType: 'CNAME', resourceRecordValue: '_y.acm-validations.aws.' }]
      : [],
  }),
  'aws:acm/certificateValidation:CertificateValidation': (_name, inputs) => ({ certificateArn: inputs.certificateArn }),
  'aws:route53/record:Record': (_name, inputs) => ({ fqdn: String(inputs.name).replace(/\.$/, '') }),
  'aws:elasticache/subnetGroup:SubnetGroup': (name) => ({ name }),
  'aws:elasticache/replicationGroup:ReplicationGroup': () => ({ primaryEndpointAddress: 'master.fleetmq-redis.abc123.euw1.cache.amazonaws.com' }),
  'tls:index/privateKey:PrivateKey': (name) => ({
    privateKeyOpenssh: `-----BEGIN OPENSSH PRIVATE KEY-----\n${name}\n-----END OPENSSH PRIVATE KEY-----\n`,
    privateKeyPem: `-----BEGIN PRIVATE KEY-----\n${name}\n-----END PRIVATE KEY-----\n`,
    publicKeyOpenssh: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5${Buffer.from(name).toString('base64')}\n`,
  }),
  'tls:index/selfSignedCert:SelfSignedCert': (name) => ({ certPem: `-----BEGIN CERTIFICATE-----\n${name}\n-----END CERTIFICATE-----\n` }),
  'tls:index/certRequest:CertRequest': (name) => ({ certRequestPem: `-----BEGIN CERTIFICATE REQUEST-----\n${name}\n-----END CERTIFICATE REQUEST-----\n` }),
  'tls:index/locallySignedCert:LocallySignedCert': (name) => ({ certPem: `-----BEGIN CERTIFICATE-----\n${name}\n-----END CERTIFICATE-----\n` }),
  'random:index/randomPassword:RandomPassword': (name) => ({ result: `secret-of-${name}` }),
  'command:remote:Command': () => ({ stdout: '', stderr: '' }),
  // What the console-reading scripts print: the VM's own host key (a stand-in derived from the name).
  'command:local:Command': (name) => ({
    stdout: name.endsWith('-host-key') ? `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5${Buffer.from(name).toString('base64')}\n` : '',
    stderr: '',
  }),
  'command:remote:CopyToRemote': () => ({}),
}

export interface MockOptions {
  /** Architecture of a custom AMI id looked up with an image-id filter. */
  customAmiArchitecture?: 'x86_64' | 'arm64'
  zones?: string[]
}

/** Plans the program with `config` (project keys without prefix, plus `aws:region`). */
export async function runProgram(config: Record<string, string>, options: MockOptions = {}): Promise<ProgramRun> {
  const fixture = makeFixture()
  const stackConfig: Record<string, string> = { 'aws:region': REGION }
  const merged: Record<string, string> = { bundlePath: fixture.bundlePath, provisionDir: fixture.provisionDir, ...config }
  for (const [key, value] of Object.entries(merged)) stackConfig[key.includes(':') ? key : `fleetmq:${key}`] = value
  process.env.PULUMI_CONFIG = JSON.stringify(stackConfig)
  // The SDK caches config on first use, and importing a provider SDK may already have used it.
  pulumi.runtime.setAllConfig(stackConfig)

  const resources: RecordedResource[] = []
  const calls: RecordedCall[] = []
  const warnings: string[] = []
  const names = new WeakMap<pulumi.Resource, string>()
  const optionsByName = new Map<string, { parent?: string; dependsOn: string[]; ignoreChanges: string[]; protect: boolean }>()

  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const outputs = args.custom === false && args.type.startsWith('fleetmq:aws:') ? () => ({}) : RESOURCE_OUTPUTS[args.type]
        if (!outputs) throw new Error(`mocks: unexpected resource type ${args.type} (${args.name}); add it to the harness if the program really needs it`)
        const recorded = optionsByName.get(`${args.type}::${args.name}`)
        const state = { ...args.inputs, ...outputs(args.name, args.inputs) }
        resources.push({ type: args.type, name: args.name, inputs: args.inputs, dependsOn: [], ignoreChanges: [], protect: false, ...recorded, state })
        return { id: `${args.name}-id`, state }
      },
      call(args) {
        calls.push({ token: args.token, inputs: args.inputs })
        if (args.token === 'aws:index/getCallerIdentity:getCallerIdentity') {
          return { accountId: '123456789012', arn: 'arn:aws:iam::123456789012:user/test', id: '123456789012', userId: 'AIDATEST' }
        }
        if (args.token === 'aws:index/getAvailabilityZones:getAvailabilityZones') {
          const zoneNames = options.zones ?? ZONES
          return { id: REGION, names: zoneNames, zoneIds: zoneNames.map((_, i) => `euw1-az${i + 1}`) }
        }
        if (args.token === 'aws:ec2/getAmi:getAmi') {
          const filters = (args.inputs.filters ?? []) as Array<{ name: string; values: string[] }>
          const imageId = filters.find((f) => f.name === 'image-id')?.values[0]
          if (imageId) {
            if (!options.customAmiArchitecture) throw new Error(`mocks: no architecture given for custom AMI ${imageId}`)
            return { id: imageId, architecture: options.customAmiArchitecture }
          }
          const architecture = filters.find((f) => f.name === 'architecture')?.values[0]
          if (architecture !== 'x86_64' && architecture !== 'arm64') throw new Error('mocks: getAmi without an architecture filter')
          return { id: `ami-debian12${architecture === 'arm64' ? 'arm' : 'x86'}0000`, architecture }
        }
        throw new Error(`mocks: unexpected call ${args.token}; add it to the harness if the program really needs it`)
      },
    },
    'fleetmq',
    'test',
    false,
  )

  // Options never reach the mocks; a stack transformation sees them (parents and dependsOn). It
  // needs the root stack resource, which the real runtime makes around the program: so do we.
  const registerOptions = (): void => pulumi.runtime.registerStackTransformation((args) => {
    names.set(args.resource, args.name)
    const dependsOn = ([] as pulumi.Input<pulumi.Resource>[]).concat((args.opts.dependsOn as pulumi.Input<pulumi.Resource>[] | undefined) ?? [])
    optionsByName.set(`${args.type}::${args.name}`, {
      parent: args.opts.parent ? names.get(args.opts.parent) : undefined,
      dependsOn: dependsOn.map((d) => names.get(d as pulumi.Resource) ?? '?'),
      ignoreChanges: args.opts.ignoreChanges ?? [],
      protect: args.opts.protect === true,
    })
    return undefined
  })
  const originalWarn = pulumi.log.warn
  pulumi.log.warn = (message: string, ...rest) => {
    warnings.push(message)
    return originalWarn(message, ...rest)
  }

  let program: Record<string, unknown> = {}
  await pulumi.runtime.runInPulumiStack(async () => {
    registerOptions()
    program = (await import('../../infra/index.js')) as Record<string, unknown>
    return program
  })
  const outputs: Record<string, unknown> = {}
  const secretOutputs = new Set<string>()
  for (const [key, value] of Object.entries(program)) {
    if (pulumi.Output.isInstance(value)) {
      outputs[key] = await new Promise((resolveValue) => value.apply(resolveValue))
      if (await pulumi.isSecret(value)) secretOutputs.add(key)
    } else {
      outputs[key] = value
    }
  }
  // Resources nothing exported depends on (the remote commands) may still be registering: wait
  // until the count stays put.
  for (let seen = -1, quiet = 0; quiet < 5; ) {
    await new Promise((r) => setTimeout(r, 20))
    quiet = resources.length === seen ? quiet + 1 : 0
    seen = resources.length
  }
  return { resources, calls, outputs, secretOutputs, warnings, fixture }
}

export const ofType = (run: ProgramRun, type: string): RecordedResource[] => run.resources.filter((r) => r.type === type)
export const named = (run: ProgramRun, name: string): RecordedResource => {
  const found = run.resources.find((r) => r.name === name)
  if (!found) throw new Error(`no resource named ${name}; have ${run.resources.map((r) => r.name).join(', ')}`)
  return found
}
