import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'

export interface PublicAddressesArgs {
  /** One address per public subnet: the NLB takes one in each. */
  subnetCount: number
}

/**
 * The static public IPs devices are configured with: one Elastic IP per public subnet, made
 * apart from the NLB so that the self-signed certificate can name them and so that replacing
 * the NLB keeps them.
 */
export class PublicAddresses extends pulumi.ComponentResource {
  readonly allocationIds: pulumi.Output<string>[]
  readonly publicIps: pulumi.Output<string>[]

  constructor(name: string, args: PublicAddressesArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:PublicAddresses', name, {}, opts)
    if (!Number.isInteger(args.subnetCount) || args.subnetCount < 1) throw new Error(`subnetCount: ${args.subnetCount} is not allowed; at least one is needed`)
    const addresses = Array.from(
      { length: args.subnetCount },
      // Protected: devices and firewalls are configured with these addresses, and a released Elastic
      // IP is gone for good. `pulumi destroy` stops at them until they are unprotected (docs/deploy-aws.md).
      (_, i) => new aws.ec2.Eip(`${name}-${i + 1}`, { domain: 'vpc', tags: { Name: `${name}-${i + 1}` } }, { parent: this, protect: true }),
    )
    this.allocationIds = addresses.map((a) => a.allocationId)
    this.publicIps = addresses.map((a) => a.publicIp)
    this.registerOutputs({ allocationIds: this.allocationIds, publicIps: this.publicIps })
  }
}
