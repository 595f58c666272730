import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import * as tls from '@pulumi/tls'
import { hostKeyUserData } from './cloud-init.js'
import { METADATA_OPTIONS, rootVolume } from './instance-settings.js'

export interface BastionArgs {
  instanceType: string
  amiId: pulumi.Input<string>
  /** A public subnet. */
  subnetId: pulumi.Input<string>
  securityGroupId: pulumi.Input<string>
  keyName: pulumi.Input<string>
}

/**
 * The only SSH entry into the VPC: remote commands and operators reach the brokers through it.
 * No instance profile (it needs no AWS API), IMDSv2 only, encrypted root, a pinned host key.
 */
export class Bastion extends pulumi.ComponentResource {
  readonly publicIp: pulumi.Output<string>
  readonly hostPublicKey: pulumi.Output<string>
  readonly instanceId: pulumi.Output<string>

  constructor(name: string, args: BastionArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:Bastion', name, {}, opts)
    const hostKey = new tls.PrivateKey(`${name}-host-key`, { algorithm: 'ED25519' }, { parent: this })
    const userData = pulumi
      .all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh])
      .apply(([privateKeyOpenssh, publicKeyOpenssh]) => hostKeyUserData({ privateKeyOpenssh, publicKeyOpenssh }))
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
        userData: pulumi.secret(userData),
        tags: { Name: name, 'fleetmq:role': 'bastion' },
        volumeTags: { Name: name },
      },
      { parent: this, ignoreChanges: ['ami'] },
    )
    this.publicIp = instance.publicIp
    this.hostPublicKey = hostKey.publicKeyOpenssh.apply((key) => key.trim())
    this.instanceId = instance.id
    this.registerOutputs({ publicIp: this.publicIp, hostPublicKey: this.hostPublicKey, instanceId: this.instanceId })
  }
}
