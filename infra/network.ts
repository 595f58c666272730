import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'

export interface NetworkArgs {
  /** Availability zone names, one public and one private subnet in each. */
  availabilityZones: readonly string[]
  /** `single`: one NAT gateway for all private subnets; `perAz`: one per zone (no cross-zone dependency). */
  natGateways: 'single' | 'perAz'
  cidrBlock?: string
  /** An S3 bucket ARN: the VPC's flow logs (accepted and rejected traffic) go there. */
  flowLogBucketArn?: pulumi.Input<string>
}

export const VPC_CIDR = '10.0.0.0/16'

/** Public subnets are /24 from 10.0.0.0 (NLB, NAT, bastion), private ones /19 from 10.0.32.0 (brokers). */
export function subnetCidrs(zoneCount: number): { public: string[]; private: string[] } {
  if (!Number.isInteger(zoneCount) || zoneCount < 1 || zoneCount > 6) {
    throw new Error(`zoneCount: ${zoneCount} is not allowed; the VPC layout holds 1 to 6 zones`)
  }
  const zones = Array.from({ length: zoneCount }, (_, i) => i)
  return {
    public: zones.map((i) => `10.0.${i}.0/24`),
    private: zones.map((i) => `10.0.${(i + 1) * 32}.0/19`),
  }
}

/** The first `count` zones of the region, or an error naming azCount and what the region has. */
export function selectZones(available: readonly string[], count: number, region: string): string[] {
  if (available.length < count) {
    throw new Error(
      `azCount: ${count} is more than the ${available.length} availability zones ${region} offers (${available.join(', ')}); set azCount to ${available.length} or less`,
    )
  }
  return [...available].sort().slice(0, count)
}

/** A VPC across zones: public subnets behind an internet gateway, private subnets behind NAT. */
export class Network extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>
  readonly cidrBlock: string
  readonly availabilityZones: readonly string[]
  readonly publicSubnetIds: pulumi.Output<string>[]
  /** The public subnets' CIDRs: the NLB connects to the brokers from addresses in these. */
  readonly publicSubnetCidrs: readonly string[]
  readonly privateSubnetIds: pulumi.Output<string>[]

  constructor(name: string, args: NetworkArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:Network', name, {}, opts)
    const zones = args.availabilityZones
    if (zones.length === 0) throw new Error('availabilityZones: at least one zone is needed')
    this.cidrBlock = args.cidrBlock ?? VPC_CIDR
    this.availabilityZones = zones
    const cidrs = subnetCidrs(zones.length)
    this.publicSubnetCidrs = Object.freeze([...cidrs.public])

    const vpc = new aws.ec2.Vpc(
      `${name}-vpc`,
      { cidrBlock: this.cidrBlock, enableDnsHostnames: true, enableDnsSupport: true, tags: { Name: `${name}-vpc` } },
      { parent: this },
    )
    this.vpcId = vpc.id
    // The VPC's default security group allows everything among its members and all egress; nothing
    // here uses it, and a resource added by hand would silently get it. Taking it over with no
    // rules leaves it empty.
    new aws.ec2.DefaultSecurityGroup(`${name}-default`, { vpcId: vpc.id, tags: { Name: `${name}-default-unused` } }, { parent: this })
    if (args.flowLogBucketArn !== undefined) {
      new aws.ec2.FlowLog(
        `${name}-flow-log`,
        { vpcId: vpc.id, trafficType: 'ALL', logDestinationType: 's3', logDestination: args.flowLogBucketArn, tags: { Name: `${name}-flow-log` } },
        { parent: this },
      )
    }

    const internetGateway = new aws.ec2.InternetGateway(`${name}-igw`, { vpcId: vpc.id, tags: { Name: `${name}-igw` } }, { parent: this })
    const publicRoutes = new aws.ec2.RouteTable(
      `${name}-public`,
      { vpcId: vpc.id, routes: [{ cidrBlock: '0.0.0.0/0', gatewayId: internetGateway.id }], tags: { Name: `${name}-public` } },
      { parent: this },
    )

    const publicSubnets = zones.map((zone, i) => {
      const subnet = new aws.ec2.Subnet(
        `${name}-public-${i + 1}`,
        {
          vpcId: vpc.id,
          availabilityZone: zone,
          cidrBlock: cidrs.public[i],
          // Nothing here gets an address by accident: the NLB uses Elastic IPs, the bastion asks for one.
          mapPublicIpOnLaunch: false,
          tags: { Name: `${name}-public-${zone}`, Tier: 'public' },
        },
        { parent: this },
      )
      new aws.ec2.RouteTableAssociation(`${name}-public-${i + 1}`, { subnetId: subnet.id, routeTableId: publicRoutes.id }, { parent: this })
      return subnet
    })
    this.publicSubnetIds = publicSubnets.map((s) => s.id)

    const natCount = args.natGateways === 'perAz' ? zones.length : 1
    const natGateways = Array.from({ length: natCount }, (_, i) => {
      const address = new aws.ec2.Eip(`${name}-nat-${i + 1}`, { domain: 'vpc', tags: { Name: `${name}-nat-${zones[i]}` } }, { parent: this, dependsOn: [internetGateway] })
      return new aws.ec2.NatGateway(
        `${name}-nat-${i + 1}`,
        { allocationId: address.id, subnetId: publicSubnets[i].id, connectivityType: 'public', tags: { Name: `${name}-nat-${zones[i]}` } },
        { parent: this, dependsOn: [internetGateway] },
      )
    })

    this.privateSubnetIds = zones.map((zone, i) => {
      const subnet = new aws.ec2.Subnet(
        `${name}-private-${i + 1}`,
        {
          vpcId: vpc.id,
          availabilityZone: zone,
          cidrBlock: cidrs.private[i],
          mapPublicIpOnLaunch: false,
          tags: { Name: `${name}-private-${zone}`, Tier: 'private' },
        },
        { parent: this },
      )
      const routes = new aws.ec2.RouteTable(
        `${name}-private-${i + 1}`,
        { vpcId: vpc.id, routes: [{ cidrBlock: '0.0.0.0/0', natGatewayId: natGateways[i % natCount].id }], tags: { Name: `${name}-private-${zone}` } },
        { parent: this },
      )
      new aws.ec2.RouteTableAssociation(`${name}-private-${i + 1}`, { subnetId: subnet.id, routeTableId: routes.id }, { parent: this })
      return subnet.id
    })

    this.registerOutputs({ vpcId: this.vpcId, publicSubnetIds: this.publicSubnetIds, privateSubnetIds: this.privateSubnetIds })
  }
}
