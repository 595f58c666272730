import * as aws from '@pulumi/aws'
import * as command from '@pulumi/command'
import * as pulumi from '@pulumi/pulumi'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { PROVISION_SOURCE, REPO_ROOT } from '../customize.js'
import { componentDocument, FIRSTBOOT_FILES, filesUnder } from './component-document.js'
import type { Architecture } from './config.js'

export interface MarketplaceAmiArgs {
  version: string
  architecture: Architecture
  /** The official Debian 12 AMI the recipe starts from. */
  parentImage: pulumi.Input<string>
  bundle: string
  instanceType: string
  regions: string[]
  launchPermissionAccounts: string[]
  public: boolean
  subnetId?: string
}

/** The AWS CLI call that makes instances of `ami` IMDSv2-only by default. */
export function imdsSupportCommand(region: string, ami: string | undefined): string {
  if (!ami || !/^ami-[0-9A-Za-z]+$/.test(ami)) throw new Error(`Image Builder distributed no AMI to ${region} (got ${ami}); check the distribution's regions`)
  return `aws ec2 modify-image-attribute --region ${region} --image-id ${ami} --imds-support v2.0`
}

/**
 * The FleetMQ AMI through EC2 Image Builder: an S3 bucket with the bundle, scripts/provision and
 * images/firstboot; a component running the install, cleanup and validate phases; a recipe on
 * the official Debian 12 AMI; a builder instance profile that may read that bucket and nothing
 * else of ours; a distribution per region; and the image, whose AMI ids are `amis`.
 */
export class MarketplaceAmi extends pulumi.ComponentResource {
  readonly bucket: pulumi.Output<string>
  /** AMI id per region. */
  readonly amis: pulumi.Output<Record<string, string>>
  readonly imageArn: pulumi.Output<string>

  constructor(name: string, args: MarketplaceAmiArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:MarketplaceAmi', name, {}, opts)
    const parent = { parent: this }
    const tags = { Project: 'fleetmq', FleetmqVersion: args.version }

    // --- the inputs, in a private bucket ------------------------------------------------------
    const bucket = new aws.s3.Bucket(`${name}-inputs`, { forceDestroy: true, tags }, parent)
    new aws.s3.BucketPublicAccessBlock(`${name}-inputs`, {
      bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true,
    }, parent)
    new aws.s3.BucketServerSideEncryptionConfiguration(`${name}-inputs`, {
      bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: 'AES256' } }],
    }, parent)
    const upload = (key: string, file: string): aws.s3.BucketObject =>
      new aws.s3.BucketObject(`${name}-${key.replace(/[^A-Za-z0-9]+/g, '-')}`, { bucket: bucket.id, key, source: new pulumi.asset.FileAsset(file) }, parent)
    const bundleKey = basename(args.bundle)
    const provisionKeys = filesUnder(PROVISION_SOURCE).map((f) => `provision/${f}`)
    const firstbootKeys = FIRSTBOOT_FILES.map((f) => `firstboot/${f}`)
    const objects = [
      upload(bundleKey, args.bundle),
      ...provisionKeys.map((key) => upload(key, join(PROVISION_SOURCE, key.slice('provision/'.length)))),
      ...firstbootKeys.map((key) => upload(key, join(REPO_ROOT, 'images/firstboot', key.slice('firstboot/'.length)))),
    ]

    // --- what the builder runs --------------------------------------------------------------------
    const data = bucket.bucket.apply((b) => componentDocument({ bucket: b, bundleKey, bundleFile: bundleKey, provisionKeys, firstbootKeys }))
    // Image Builder versions are immutable: a content hash in the name makes each change a new one.
    const contentHash = createHash('sha256')
    contentHash.update(readFileSync(args.bundle))
    for (const key of provisionKeys) contentHash.update(readFileSync(join(PROVISION_SOURCE, key.slice('provision/'.length))))
    for (const key of firstbootKeys) contentHash.update(readFileSync(join(REPO_ROOT, 'images/firstboot', key.slice('firstboot/'.length))))
    const hash = contentHash.digest('hex').slice(0, 10)
    const component = new aws.imagebuilder.Component(`${name}-install`, {
      name: `fleetmq-install-${hash}`,
      platform: 'Linux',
      version: args.version,
      supportedOsVersions: ['Debian 12'],
      data,
      description: 'FleetMQ: install, first boot, cleanup and validate phases',
      tags,
    }, { ...parent, dependsOn: objects })

    const recipe = new aws.imagebuilder.ImageRecipe(`${name}-recipe`, {
      name: `fleetmq-${args.architecture}-${hash}`,
      version: args.version,
      parentImage: args.parentImage,
      components: [{ componentArn: component.arn }],
      blockDeviceMappings: [{ deviceName: '/dev/xvda', ebs: { volumeSize: 8, volumeType: 'gp3', encrypted: 'false', deleteOnTermination: 'true' } }],
      // The SSM agent is Image Builder's way in; it leaves with the build (nothing of it in the AMI).
      systemsManagerAgent: { uninstallAfterBuild: true },
      tags,
    }, parent)

    // --- the builder instance: reads our bucket and its component, and nothing else -------------
    const role = new aws.iam.Role(`${name}-builder`, {
      assumeRolePolicy: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }] }),
      tags,
    }, parent)
    new aws.iam.RolePolicyAttachment(`${name}-builder-ssm`, { role: role.name, policyArn: 'arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore' }, parent)
    new aws.iam.RolePolicy(`${name}-builder-inputs`, {
      role: role.id,
      policy: pulumi.all([bucket.arn, component.arn]).apply(([bucketArn, componentArn]) => JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Sid: 'ReadBuildInputs', Effect: 'Allow', Action: ['s3:GetObject'], Resource: [`${bucketArn}/*`] },
          { Sid: 'ListBuildInputs', Effect: 'Allow', Action: ['s3:ListBucket'], Resource: [bucketArn] },
          { Sid: 'ReadComponent', Effect: 'Allow', Action: ['imagebuilder:GetComponent'], Resource: [`${componentArn.replace(/\/\d+\.\d+\.\d+\/\d+$/, '')}/*`] },
          // AWSTOE, the component runner, is downloaded from Image Builder's own buckets.
          { Sid: 'ReadImageBuilderTools', Effect: 'Allow', Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::ec2imagebuilder*'] },
        ],
      })),
    }, parent)
    const profile = new aws.iam.InstanceProfile(`${name}-builder`, { role: role.name, tags }, parent)
    const infrastructure = new aws.imagebuilder.InfrastructureConfiguration(`${name}-infrastructure`, {
      name: `fleetmq-${args.architecture}-builder-${name}`,
      instanceProfileName: profile.name,
      instanceTypes: [args.instanceType],
      instanceMetadataOptions: { httpTokens: 'required', httpPutResponseHopLimit: 1 },
      terminateInstanceOnFailure: true,
      ...(args.subnetId ? { subnetId: args.subnetId } : {}),
      tags,
    }, parent)

    // --- where the AMI goes ------------------------------------------------------------------
    const launchPermission = args.public || args.launchPermissionAccounts.length
      ? { ...(args.public ? { userGroups: ['all'] } : {}), ...(args.launchPermissionAccounts.length ? { userIds: args.launchPermissionAccounts } : {}) }
      : undefined
    const distribution = new aws.imagebuilder.DistributionConfiguration(`${name}-distribution`, {
      name: `fleetmq-${args.architecture}-${name}`,
      distributions: args.regions.map((region) => ({
        region,
        amiDistributionConfiguration: {
          name: `fleetmq-${args.version}-debian-12-${args.architecture}-{{ imagebuilder:buildDate }}`,
          description: `FleetMQ ${args.version} MQTT broker on Debian 12 (${args.architecture}); credentials are generated at first boot`,
          amiTags: { ...tags, Name: `fleetmq-${args.version}-${args.architecture}`, BaseImage: 'debian-12' },
          ...(launchPermission ? { launchPermission } : {}),
        },
      })),
      tags,
    }, parent)

    const image = new aws.imagebuilder.Image(`${name}-image`, {
      imageRecipeArn: recipe.arn,
      infrastructureConfigurationArn: infrastructure.arn,
      distributionConfigurationArn: distribution.arn,
      enhancedImageMetadataEnabled: true,
      tags,
    }, parent)

    const built = image.outputResources.apply((resources) =>
      Object.fromEntries(resources.flatMap((r) => r.amis).map((ami) => [ami.region, ami.image])))
    // ImdsSupport v2.0: an instance launched from the AMI gets IMDSv2 only (session tokens), even
    // when its launch does not ask for it; a process that can make the instance fetch a URL then
    // cannot read the role's credentials. Image Builder's distribution has no such setting, so the
    // AWS CLI sets it on each distributed AMI (once set, EC2 does not let it be unset).
    const imds = args.regions.map((region) => new command.local.Command(`${name}-imds-${region}`, {
      create: built.apply((amis) => imdsSupportCommand(region, amis[region])),
    }, { parent: this, dependsOn: [image] }))
    this.bucket = bucket.bucket
    this.imageArn = image.arn
    this.amis = pulumi.all(imds.map((c) => c.stdout)).apply(() => built)
    this.registerOutputs({ bucket: this.bucket, amis: this.amis, imageArn: this.imageArn })
  }
}
