import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import * as command from '@pulumi/command'
import { consoleHostKeyScript, nodeUserData } from './cloud-init.js'
import { METADATA_OPTIONS, rootVolume } from './instance-settings.js'

export interface BastionArgs {
  instanceType: string
  amiId: pulumi.Input<string>
  /** A public subnet. */
  subnetId: pulumi.Input<string>
  securityGroupId: pulumi.Input<string>
  keyName: pulumi.Input<string>
  /** The region, for `aws ec2 get-console-output` (the pinned host key). */
  region: string
}

/**
 * The only SSH entry into the VPC: remote commands and operators reach the brokers through it.
 * No instance profile (it needs no AWS API), IMDSv2 only, encrypted root, its own host key pinned
 * from its console output.
 */
export class Bastion extends pulumi.ComponentResource {
  readonly publicIp: pulumi.Output<string>
  readonly hostPublicKey: pulumi.Output<string>
  readonly instanceId: pulumi.Output<string>

  constructor(name: string, args: BastionArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:Bastion', name, {}, opts)
    const instance = new aws.ec2.Instance(
      name,
      {
        ami: args.amiId,
        instanceType: args.instanceType,
        subnetId: args.subnetId,
        vpcSecurityGroupIds: [args.securityGroupId],
        associatePublicIpAddress: true,
        keyName: args.keyName,
        metadataOptions: METADATA_OPTIONS,
        rootBlockDevice: rootVolume(8),
        userData: nodeUserData(),
        tags: { Name: name, 'fleetmq:role': 'bastion' },
        volumeTags: { Name: name },
      },
      { parent: this, ignoreChanges: ['ami'] },
    )
    this.publicIp = instance.publicIp
    const hostKey = new command.local.Command(`${name}-host-key`, {
      create: instance.id.apply((instanceId) => consoleHostKeyScript({ region: args.region, instanceId })),
      triggers: [instance.id],
    }, { parent: this })
    this.hostPublicKey = hostKey.stdout.apply((key) => key.trim())
    this.instanceId = instance.id
    this.registerOutputs({ publicIp: this.publicIp, hostPublicKey: this.hostPublicKey, instanceId: this.instanceId })
  }
}
