import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import { PORTS } from './ports.js'

export interface ElastiCacheArgs {
  nodeType: string
  /** Private subnets; with two or more the group gets a replica in another zone and automatic failover. */
  subnetIds: readonly pulumi.Input<string>[]
  securityGroupId: pulumi.Input<string>
  /** AUTH token (16 to 128 printable characters, no @, " or /). */
  authToken: pulumi.Input<string>
}

/** A managed Redis for the cluster state: encrypted at rest and in transit, AUTH required, Multi-AZ when it can be. */
export class ElastiCache extends pulumi.ComponentResource {
  readonly primaryEndpoint: pulumi.Output<string>
  readonly port: number

  constructor(name: string, args: ElastiCacheArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:ElastiCache', name, {}, opts)
    if (args.subnetIds.length === 0) throw new Error('subnetIds: ElastiCache needs at least one private subnet')
    const highlyAvailable = args.subnetIds.length >= 2

    const subnetGroup = new aws.elasticache.SubnetGroup(
      name,
      { description: 'FleetMQ Redis: the private subnets', subnetIds: [...args.subnetIds] },
      { parent: this },
    )
    const group = new aws.elasticache.ReplicationGroup(
      name,
      {
        description: 'FleetMQ cluster state: sessions, subscriptions, retained messages, fan-out',
        engine: 'redis',
        engineVersion: '7.1',
        nodeType: args.nodeType,
        port: PORTS.redis,
        numCacheClusters: highlyAvailable ? 2 : 1,
        automaticFailoverEnabled: highlyAvailable,
        multiAzEnabled: highlyAvailable,
        subnetGroupName: subnetGroup.name,
        securityGroupIds: [args.securityGroupId],
        atRestEncryptionEnabled: true,
        transitEncryptionEnabled: true,
        authToken: args.authToken,
        snapshotRetentionLimit: 1,
        applyImmediately: false,
        tags: { Name: name },
      },
      { parent: this },
    )
    this.primaryEndpoint = group.primaryEndpointAddress
    this.port = PORTS.redis
    this.registerOutputs({ primaryEndpoint: this.primaryEndpoint, port: this.port })
  }
}
