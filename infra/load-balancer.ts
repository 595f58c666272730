import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import { PORTS } from './ports.js'

/**
 * TLS 1.3 and 1.2 only, forward-secret ciphers. Written out because the API default for a TLS
 * listener is still `ELBSecurityPolicy-2016-08` (TLS 1.0 and CBC ciphers).
 */
export const TLS_POLICY = 'ELBSecurityPolicy-TLS13-1-2-2021-06'

export interface LoadBalancerArgs {
  vpcId: pulumi.Input<string>
  publicSubnetIds: readonly pulumi.Input<string>[]
  /** Elastic IP allocations, one per public subnet, in the same order. */
  allocationIds: readonly pulumi.Input<string>[]
  securityGroupId: pulumi.Input<string>
  certificateArn: pulumi.Input<string>
  instanceIds: readonly pulumi.Input<string>[]
  /** Also listen on 443 (MQTT over WebSocket + TLS) and forward to the brokers' WebSocket port. */
  wss: boolean
  /** A name to alias to the NLB in a Route 53 zone. */
  dns?: { domainName: string; hostedZoneId: string }
  /** An S3 bucket (name) for access logs: one line per TLS connection, with the client address. */
  accessLogBucket?: pulumi.Input<string>
}

/** TCP health check on the traffic port: with PROXY v2 on, the NLB opens it with a v2 LOCAL header, which the broker accepts. */
export const HEALTH_CHECK: aws.types.input.lb.TargetGroupHealthCheck = Object.freeze({
  enabled: true,
  protocol: 'TCP',
  port: 'traffic-port',
  interval: 10,
  healthyThreshold: 3,
  unhealthyThreshold: 3,
})

/**
 * An internet-facing NLB with one Elastic IP per public subnet, its security group attached at
 * creation (an NLB created without one can never get one), cross-zone on. TLS ends at the NLB;
 * brokers receive plain TCP with a PROXY v2 header carrying the device's address.
 */
export class LoadBalancer extends pulumi.ComponentResource {
  readonly arn: pulumi.Output<string>
  readonly dnsName: pulumi.Output<string>
  readonly zoneId: pulumi.Output<string>

  constructor(name: string, args: LoadBalancerArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:LoadBalancer', name, {}, opts)
    if (args.publicSubnetIds.length === 0) throw new Error('publicSubnetIds: the NLB needs at least one public subnet')
    if (args.allocationIds.length !== args.publicSubnetIds.length) {
      throw new Error(`allocationIds: ${args.allocationIds.length} Elastic IPs for ${args.publicSubnetIds.length} public subnets; give one per subnet`)
    }

    const loadBalancer = new aws.lb.LoadBalancer(
      name,
      {
        loadBalancerType: 'network',
        internal: false,
        ipAddressType: 'ipv4',
        subnetMappings: args.publicSubnetIds.map((subnetId, i) => ({ subnetId, allocationId: args.allocationIds[i] })),
        securityGroups: [args.securityGroupId],
        enableCrossZoneLoadBalancing: true,
        ...(args.accessLogBucket !== undefined ? { accessLogs: { bucket: args.accessLogBucket, prefix: 'nlb', enabled: true } } : {}),
        tags: { Name: name },
      },
      { parent: this },
    )

    const targets: Array<{ key: string; listenPort: number; targetPort: number }> = [{ key: 'mqtt', listenPort: PORTS.mqtts, targetPort: PORTS.mqtt }]
    if (args.wss) targets.push({ key: 'ws', listenPort: PORTS.wss, targetPort: PORTS.ws })
    for (const { key, listenPort, targetPort } of targets) {
      const targetGroup = new aws.lb.TargetGroup(
        `${name}-${key}`,
        {
          vpcId: args.vpcId,
          targetType: 'instance',
          protocol: 'TCP',
          port: targetPort,
          proxyProtocolV2: true,
          // The device address travels in the PROXY header; the broker sees connections from the NLB.
          preserveClientIp: 'false',
          healthCheck: HEALTH_CHECK,
          // MQTT connections are long-lived: on deregistration close them so devices reconnect elsewhere.
          connectionTermination: true,
          deregistrationDelay: 30,
          tags: { Name: `${name}-${key}` },
        },
        { parent: this },
      )
      new aws.lb.Listener(
        `${name}-${key}`,
        {
          loadBalancerArn: loadBalancer.arn,
          port: listenPort,
          protocol: 'TLS',
          sslPolicy: TLS_POLICY,
          certificateArn: args.certificateArn,
          defaultActions: [{ type: 'forward', targetGroupArn: targetGroup.arn }],
          tags: { Name: `${name}-${key}` },
        },
        { parent: this },
      )
      args.instanceIds.forEach((targetId, i) => {
        new aws.lb.TargetGroupAttachment(`${name}-${key}-${i + 1}`, { targetGroupArn: targetGroup.arn, targetId, port: targetPort }, { parent: this })
      })
    }

    if (args.dns) {
      new aws.route53.Record(
        `${name}-alias`,
        {
          zoneId: args.dns.hostedZoneId,
          name: args.dns.domainName,
          type: 'A',
          aliases: [{ name: loadBalancer.dnsName, zoneId: loadBalancer.zoneId, evaluateTargetHealth: true }],
        },
        { parent: this },
      )
    }

    this.arn = loadBalancer.arn
    this.dnsName = loadBalancer.dnsName
    this.zoneId = loadBalancer.zoneId
    this.registerOutputs({ arn: this.arn, dnsName: this.dnsName, zoneId: this.zoneId })
  }
}
