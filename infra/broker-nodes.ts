import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import * as command from '@pulumi/command'
import { consoleHostKeyScript, nodeUserData } from './cloud-init.js'
import { METADATA_OPTIONS, rootVolume } from './instance-settings.js'

export interface BrokerNodesArgs {
  count: number
  instanceType: string
  amiId: pulumi.Input<string>
  /** Private subnets; node i goes to subnet i mod n, so nodes spread over the zones. */
  subnetIds: readonly pulumi.Input<string>[]
  securityGroupId: pulumi.Input<string>
  keyName: pulumi.Input<string>
  partition: string
  /** The region, for `aws ec2 get-console-output` (the pinned host keys). */
  region: string
  /** Root volume size (GiB): OS, broker, Redis data and logs. */
  rootVolumeGiB?: number
}

export interface BrokerNode {
  /** `<name>-<n>`, n from 1: also the broker's node name. */
  readonly name: string
  readonly index: number
  readonly instance: aws.ec2.Instance
  readonly privateIp: pulumi.Output<string>
  /** The pinned SSH host key, `ssh-ed25519 AAAA...`, as the node printed it on its console. */
  readonly hostPublicKey: pulumi.Output<string>
}

/**
 * AWS managed policies the nodes need, and nothing more: the SSM agent (Session Manager). No
 * CloudWatch agent runs on the nodes, so its policy (which may write any log group and metric)
 * is not granted.
 */
export function brokerPolicyArns(partition: string): string[] {
  return [`arn:${partition}:iam::aws:policy/AmazonSSMManagedInstanceCore`]
}

/**
 * The broker VMs: EC2 instances in the private subnets, IMDSv2 only, encrypted gp3, host keys made
 * on each node and pinned from its console output.
 */
export class BrokerNodes extends pulumi.ComponentResource {
  readonly nodes: readonly BrokerNode[]
  readonly instanceIds: pulumi.Output<string>[]
  readonly privateIps: pulumi.Output<string>[]

  constructor(name: string, args: BrokerNodesArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:BrokerNodes', name, {}, opts)
    if (!Number.isInteger(args.count) || args.count < 1) throw new Error(`count: ${args.count} is not allowed; at least one broker node is needed`)
    if (args.subnetIds.length === 0) throw new Error('subnetIds: at least one private subnet is needed')

    const role = new aws.iam.Role(
      `${name}-role`,
      {
        description: 'FleetMQ broker nodes: SSM agent',
        assumeRolePolicy: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
        }),
      },
      { parent: this },
    )
    const attachments = brokerPolicyArns(args.partition).map(
      (policyArn, i) => new aws.iam.RolePolicyAttachment(`${name}-policy-${i + 1}`, { role: role.name, policyArn }, { parent: this }),
    )
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name }, { parent: this, dependsOn: attachments })

    this.nodes = Array.from({ length: args.count }, (_, index) => {
      const nodeName = `${name}-${index + 1}`
      const instance = new aws.ec2.Instance(
        nodeName,
        {
          ami: args.amiId,
          instanceType: args.instanceType,
          subnetId: args.subnetIds[index % args.subnetIds.length],
          vpcSecurityGroupIds: [args.securityGroupId],
          associatePublicIpAddress: false,
          keyName: args.keyName,
          iamInstanceProfile: profile.name,
          metadataOptions: METADATA_OPTIONS,
          rootBlockDevice: rootVolume(args.rootVolumeGiB ?? 20),
          userData: nodeUserData({ externalProvisioning: true }),
          tags: { Name: nodeName, 'fleetmq:role': 'broker' },
          volumeTags: { Name: nodeName },
        },
        // A new AMI from the region's Debian lookup must not replace running brokers by itself.
        { parent: this, ignoreChanges: ['ami'] },
      )
      const hostKey = new command.local.Command(`${nodeName}-host-key`, {
        create: instance.id.apply((instanceId) => consoleHostKeyScript({ region: args.region, instanceId })),
        // A replaced instance has new keys: read them again.
        triggers: [instance.id],
      }, { parent: this })
      return { name: nodeName, index, instance, privateIp: instance.privateIp, hostPublicKey: hostKey.stdout.apply((key) => key.trim()) }
    })
    this.instanceIds = this.nodes.map((n) => n.instance.id)
    this.privateIps = this.nodes.map((n) => n.privateIp)
    this.registerOutputs({ instanceIds: this.instanceIds, privateIps: this.privateIps })
  }
}
