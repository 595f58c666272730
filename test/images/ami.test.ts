/*
 * The AMI program (images/aws) under Pulumi's mocks: the Image Builder resources it plans, the
 * least-privilege builder profile, the distribution settings from config, and that its component
 * runs the same phases on the same files as the local qcow2 build. Mocks answer only the resource
 * types and calls the program is known to use and throw on anything else.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { before, test } from 'node:test'
import * as pulumi from '@pulumi/pulumi'
import { parse } from 'yaml'
import { BUILD_PHASES, FIRSTBOOT_FILES, PROVISION_ENTRY, PROVISION_SOURCE, REPO_ROOT } from '../../images/customize.js'
import { filesUnder } from '../../images/aws/component-document.js'
import { resolveAmiConfig } from '../../images/aws/config.js'
import { run } from '../../images/run.js'

interface Recorded { type: string; name: string; inputs: Record<string, any> }

const REGION = 'us-east-1'
const MARKETPLACE_ACCOUNT = '679593333241'
const resources: Recorded[] = []
let outputs: Record<string, unknown> = {}

const RESOURCE_OUTPUTS: Record<string, (name: string, inputs: Record<string, any>) => Record<string, unknown>> = {
  'fleetmq:aws:MarketplaceAmi': () => ({}),
  'aws:s3/bucket:Bucket': (name) => ({ bucket: `${name}-bucket`, arn: `arn:aws:s3:::${name}-bucket` }),
  'aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock': () => ({}),
  'aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration': () => ({}),
  'aws:s3/bucketObject:BucketObject': () => ({}),
  'aws:imagebuilder/component:Component': (_n, inputs) => ({ arn: `arn:aws:imagebuilder:${REGION}:123456789012:component/${inputs.name}/${inputs.version}/1` }),
  'aws:imagebuilder/imageRecipe:ImageRecipe': (_n, inputs) => ({ arn: `arn:aws:imagebuilder:${REGION}:123456789012:image-recipe/${inputs.name}/${inputs.version}` }),
  'aws:iam/role:Role': (name) => ({ name: `${name}-x`, arn: `arn:aws:iam::123456789012:role/${name}` }),
  'aws:iam/rolePolicyAttachment:RolePolicyAttachment': () => ({}),
  'aws:iam/rolePolicy:RolePolicy': () => ({}),
  'aws:iam/instanceProfile:InstanceProfile': (name) => ({ name: `${name}-x` }),
  'aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration': (name) => ({ arn: `arn:aws:imagebuilder:${REGION}:123456789012:infrastructure-configuration/${name}` }),
  'aws:imagebuilder/distributionConfiguration:DistributionConfiguration': (name) => ({ arn: `arn:aws:imagebuilder:${REGION}:123456789012:distribution-configuration/${name}` }),
  'command:local:Command': () => ({ stdout: '', stderr: '' }),
  'aws:imagebuilder/image:Image': (_n, inputs) => ({
    arn: `arn:aws:imagebuilder:${REGION}:123456789012:image/fleetmq/0.1.0/1`,
    outputResources: [{ amis: ['us-east-1', 'eu-west-1'].map((region, i) => ({ region, image: `ami-0fleetmq${i}`, name: 'fleetmq', accountId: '123456789012', description: '' })), containers: [] }],
    ...inputs,
  }),
}

const byType = (type: string): Recorded[] => resources.filter((r) => r.type === type)
const one = (type: string): Recorded => {
  const found = byType(type)
  assert.equal(found.length, 1, `expected one ${type}, got ${found.length}`)
  return found[0]
}

before(async () => {
  // A stand-in bundle with a bundle's name: the mocks never upload it.
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-ami-'))
  mkdirSync(join(dir, 'dist'))
  const bundle = join(dir, 'dist', 'fleetmq-0.1.0-linux-x64.tar.gz')
  writeFileSync(bundle, 'stand-in bundle\n')
  const config = {
    'aws:region': REGION,
    'fleetmq-ami:bundle': relative(REPO_ROOT, bundle),
    'fleetmq-ami:regions': JSON.stringify(['eu-west-1']),
    'fleetmq-ami:launchPermissionAccounts': JSON.stringify([MARKETPLACE_ACCOUNT]),
  }
  process.env.PULUMI_CONFIG = JSON.stringify(config)
  pulumi.runtime.setAllConfig(config)
  await pulumi.runtime.setMocks({
    newResource(args) {
      const make = RESOURCE_OUTPUTS[args.type]
      if (!make) throw new Error(`mocks: unexpected resource type ${args.type} (${args.name})`)
      const state = { ...args.inputs, ...make(args.name, args.inputs) }
      resources.push({ type: args.type, name: args.name, inputs: args.inputs })
      return { id: `${args.name}-id`, state }
    },
    call(args) {
      if (args.token === 'aws:ec2/getAmi:getAmi') {
        const owners = args.inputs.owners as string[]
        assert.deepEqual(owners, ['136693071363'], 'the recipe starts from the official Debian AMI')
        return { id: 'ami-debian12x86', architecture: 'x86_64' }
      }
      throw new Error(`mocks: unexpected call ${args.token}`)
    },
  }, 'fleetmq-ami', 'test', false)
  const program = await import('../../images/aws/index.js')
  const resolve = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((r) => o.apply((v) => { r(v); return v }))
  outputs = { amis: await resolve(program.amis), imageArn: await resolve(program.imageArn) }
  // Let every resource registration reach the mocks.
  await new Promise((r) => setTimeout(r, 200))
})

test('the component runs install, cleanup and validate on the same files as the local build', async () => {
  const component = one('aws:imagebuilder/component:Component')
  const doc = parse(await new Promise<string>((r) => pulumi.output(component.inputs.data).apply((d: string) => { r(d); return d }))) as {
    phases: Array<{ name: string; steps: Array<{ name: string; action: string; inputs: any }> }>
  }
  const steps = doc.phases.find((p) => p.name === 'build')!.steps
  const commands = steps.filter((s) => s.action === 'ExecuteBash').flatMap((s) => s.inputs.commands as string[]).join('\n')
  const phasesRun = [...commands.matchAll(new RegExp(`${PROVISION_ENTRY} (\\w+)`, 'g'))].map((m) => m[1])
  assert.deepEqual(phasesRun, [...BUILD_PHASES], 'the AMI runs the phases of images/build.ts, in order')
  assert.match(commands, /install-image-files \/var\/tmp\/fleetmq-stage/)
  // On the live builder instance validate runs with --live, as the step right after cleanup (it
  // checks that cleanup ran in this boot): a plain validate would fail on the SSM agent's logs.
  const bashSteps = steps.filter((s) => s.action === 'ExecuteBash').map((s) => (s.inputs.commands as string[]).at(-1))
  assert.deepEqual(bashSteps.slice(-2), [`bash /usr/lib/fleetmq/provision/${PROVISION_ENTRY} cleanup`, `bash /usr/lib/fleetmq/provision/${PROVISION_ENTRY} validate --live`])
  // The option exists in the provisioning entry point the component downloads.
  assert.match((await run('bash', [join(PROVISION_SOURCE, PROVISION_ENTRY), '--help'])).stdout, /\[--live\]/)
  const downloaded = (steps.find((s) => s.action === 'S3Download')!.inputs as Array<{ source: string; destination: string }>).map((d) => d.destination)
  const expected = [
    '/var/tmp/fleetmq-stage/fleetmq-0.1.0-linux-x64.tar.gz',
    ...filesUnder(PROVISION_SOURCE).map((f) => `/var/tmp/fleetmq-stage/provision/${f}`),
    ...FIRSTBOOT_FILES.map((f) => `/var/tmp/fleetmq-stage/firstboot/${f}`),
  ]
  assert.deepEqual(downloaded.sort(), expected.sort())
  for (const f of FIRSTBOOT_FILES) assert.ok(existsSync(join(REPO_ROOT, 'images/firstboot', f)), `images/firstboot/${f} is uploaded but missing`)
  // Every download has an object in the bucket under the same key.
  const keys = byType('aws:s3/bucketObject:BucketObject').map((o) => o.inputs.key as string)
  assert.deepEqual(keys.map((k) => `/var/tmp/fleetmq-stage/${k}`).sort(), expected.sort())
})

test('the recipe builds on the official Debian 12 AMI and leaves no SSM agent behind', () => {
  const recipe = one('aws:imagebuilder/imageRecipe:ImageRecipe')
  assert.equal(recipe.inputs.parentImage, 'ami-debian12x86')
  assert.equal(recipe.inputs.components.length, 1)
  assert.deepEqual(recipe.inputs.systemsManagerAgent, { uninstallAfterBuild: true })
})

test('the builder instance profile may read its inputs and nothing else of ours', () => {
  const attachments = byType('aws:iam/rolePolicyAttachment:RolePolicyAttachment').map((a) => a.inputs.policyArn)
  assert.deepEqual(attachments, ['arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore'])
  const policy = JSON.parse(one('aws:iam/rolePolicy:RolePolicy').inputs.policy) as { Statement: Array<{ Action: string[]; Resource: string[] }> }
  for (const statement of policy.Statement) {
    for (const action of statement.Action) assert.ok(!action.includes('*'), `wildcard action ${action}`)
    for (const resource of statement.Resource) assert.notEqual(resource, '*')
  }
  const bucket = byType('aws:s3/bucket:Bucket')[0]
  assert.ok(policy.Statement.some((s) => s.Resource.includes(`arn:aws:s3:::${bucket.name}-bucket/*`)))
  const infrastructure = one('aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration')
  assert.equal(infrastructure.inputs.instanceMetadataOptions.httpTokens, 'required')
  assert.equal(infrastructure.inputs.terminateInstanceOnFailure, true)
  const block = one('aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock').inputs
  assert.ok(block.blockPublicAcls && block.blockPublicPolicy && block.ignorePublicAcls && block.restrictPublicBuckets)
})

test('the distribution names the AMI with the version, tags it and shares it as configured, per region', () => {
  const distributions = one('aws:imagebuilder/distributionConfiguration:DistributionConfiguration').inputs.distributions as Array<Record<string, any>>
  assert.deepEqual(distributions.map((d) => d.region), ['us-east-1', 'eu-west-1'])
  for (const d of distributions) {
    const ami = d.amiDistributionConfiguration
    assert.match(ami.name, /^fleetmq-0\.1\.0-debian-12-x86_64-\{\{ imagebuilder:buildDate \}\}$/)
    assert.equal(ami.amiTags.FleetmqVersion, '0.1.0')
    assert.deepEqual(ami.launchPermission, { userIds: [MARKETPLACE_ACCOUNT] })
  }
  assert.deepEqual(outputs.amis, { 'us-east-1': 'ami-0fleetmq0', 'eu-west-1': 'ami-0fleetmq1' })
})

test('every distributed AMI gets ImdsSupport v2.0 (instances from it are IMDSv2-only), once the image exists', () => {
  const calls = resources.filter((r) => r.type === 'command:local:Command').map((r) => r.inputs.create as string).sort()
  assert.deepEqual(calls, [
    'aws ec2 modify-image-attribute --region eu-west-1 --image-id ami-0fleetmq1 --imds-support v2.0',
    'aws ec2 modify-image-attribute --region us-east-1 --image-id ami-0fleetmq0 --imds-support v2.0',
  ])
})

test('bad AMI config is refused with every problem named', () => {
  assert.throws(() => resolveAmiConfig({ region: 'eu-west-1', architecture: 'arm64', instanceType: 't3.medium', bundle: 'dist/none.tar.gz', launchPermissionAccounts: ['12345'], regions: ['Europe'] }, '0.1.0'),
    (err: Error) => {
      for (const key of ['instanceType: t3.medium does not run arm64', 'bundle: dist/none.tar.gz does not exist', 'launchPermissionAccounts: "12345"', 'regions: "Europe"']) assert.ok(err.message.includes(key), `missing "${key}" in ${err.message}`)
      return true
    })
})
