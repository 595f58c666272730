import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import { PORTS } from './ports.js'

export interface SecurityGroupsArgs {
  vpcId: pulumi.Input<string>
  /** Who may reach the public MQTT endpoint. */
  mqttAllowedCidrs: readonly string[]
  /** Who may SSH to the bastion. */
  adminCidr: string
  /** Open 443 (MQTT over WebSocket + TLS) on the NLB as well as 8883. */
  wss: boolean
  /** `colocated`: Redis and Sentinel on the brokers; `elasticache`: a Redis group of its own. */
  redis: 'colocated' | 'elasticache'
}

type Peer = { cidrIpv4: string } | { referencedSecurityGroupId: pulumi.Input<string> }

/**
 * Least-privilege security groups. One rule per resource (`aws.vpc.SecurityGroup*Rule`), no
 * inline rules, so the default allow-all egress is removed and every opening is visible here:
 * - NLB: 8883 (and 443) from `mqttAllowedCidrs`; out only to the brokers' MQTT ports.
 * - brokers: MQTT from the NLB only (traffic and health checks), management, Redis and Sentinel
 *   from each other only, SSH from the bastion only; out to each other, Redis, and HTTPS/HTTP
 *   for SSM, AWS APIs and Debian updates (through NAT).
 * - bastion: SSH from `adminCidr` only; out only SSH to the brokers.
 * - redis (ElastiCache): 6379 from the brokers only.
 */
export class SecurityGroups extends pulumi.ComponentResource {
  readonly loadBalancerGroupId: pulumi.Output<string>
  readonly brokerGroupId: pulumi.Output<string>
  readonly bastionGroupId: pulumi.Output<string>
  readonly redisGroupId: pulumi.Output<string> | undefined

  constructor(name: string, args: SecurityGroupsArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:SecurityGroups', name, {}, opts)
    if (args.mqttAllowedCidrs.length === 0) throw new Error('mqttAllowedCidrs: at least one CIDR is needed, or no device can connect')

    const group = (role: string, description: string): aws.ec2.SecurityGroup =>
      new aws.ec2.SecurityGroup(`${name}-${role}`, { vpcId: args.vpcId, description, tags: { Name: `${name}-${role}` } }, { parent: this })
    const loadBalancer = group('nlb', 'FleetMQ NLB: MQTT over TLS from the allowed device networks')
    const broker = group('broker', 'FleetMQ brokers: MQTT from the NLB, cluster traffic from each other, SSH from the bastion')
    const bastion = group('bastion', 'FleetMQ bastion: SSH from the admin network')
    const redis = args.redis === 'elasticache' ? group('redis', 'FleetMQ ElastiCache: Redis from the brokers') : undefined

    const ingress = (ruleName: string, target: aws.ec2.SecurityGroup, port: number, peer: Peer, description: string): void => {
      new aws.vpc.SecurityGroupIngressRule(
        `${name}-${ruleName}`,
        { securityGroupId: target.id, ipProtocol: 'tcp', fromPort: port, toPort: port, description, ...peer },
        { parent: this },
      )
    }
    const egress = (ruleName: string, source: aws.ec2.SecurityGroup, port: number, peer: Peer, description: string): void => {
      new aws.vpc.SecurityGroupEgressRule(
        `${name}-${ruleName}`,
        { securityGroupId: source.id, ipProtocol: 'tcp', fromPort: port, toPort: port, description, ...peer },
        { parent: this },
      )
    }
    const from = (g: aws.ec2.SecurityGroup): Peer => ({ referencedSecurityGroupId: g.id })

    args.mqttAllowedCidrs.forEach((cidr, i) => {
      ingress(`nlb-mqtts-${i + 1}`, loadBalancer, PORTS.mqtts, { cidrIpv4: cidr }, `MQTT over TLS from ${cidr}`)
      if (args.wss) ingress(`nlb-wss-${i + 1}`, loadBalancer, PORTS.wss, { cidrIpv4: cidr }, `MQTT over WebSocket + TLS from ${cidr}`)
    })
    egress('nlb-to-broker-mqtt', loadBalancer, PORTS.mqtt, from(broker), 'MQTT (PROXY v2) and health checks to the brokers')
    ingress('broker-mqtt-from-nlb', broker, PORTS.mqtt, from(loadBalancer), 'MQTT (PROXY v2) and health checks from the NLB')
    if (args.wss) {
      egress('nlb-to-broker-ws', loadBalancer, PORTS.ws, from(broker), 'MQTT over WebSocket (PROXY v2) to the brokers')
      ingress('broker-ws-from-nlb', broker, PORTS.ws, from(loadBalancer), 'MQTT over WebSocket (PROXY v2) from the NLB')
    }

    const clusterPorts: Array<[string, number, string]> = [['mgmt', PORTS.mgmt, 'management API and cluster join']]
    if (args.redis === 'colocated') {
      clusterPorts.push(['redis', PORTS.redis, 'Redis replication and clients'], ['sentinel', PORTS.sentinel, 'Redis Sentinel'])
    }
    for (const [portName, port, what] of clusterPorts) {
      ingress(`broker-${portName}-from-broker`, broker, port, from(broker), `${what} from the other brokers`)
      egress(`broker-${portName}-to-broker`, broker, port, from(broker), `${what} to the other brokers`)
    }
    if (redis) {
      ingress('redis-from-broker', redis, PORTS.redis, from(broker), 'Redis (TLS) from the brokers')
      egress('broker-to-redis', broker, PORTS.redis, from(redis), 'Redis (TLS) to ElastiCache')
    }

    ingress('broker-ssh-from-bastion', broker, PORTS.ssh, from(bastion), 'SSH from the bastion')
    ingress('bastion-ssh-from-admin', bastion, PORTS.ssh, { cidrIpv4: args.adminCidr }, `SSH from the admin network ${args.adminCidr}`)
    egress('bastion-ssh-to-broker', bastion, PORTS.ssh, from(broker), 'SSH to the brokers')

    // Outbound through NAT: SSM agent and AWS APIs over HTTPS; Debian updates over HTTP
    // (apt verifies the signed Release files, so plain HTTP mirrors are the Debian default).
    egress('broker-https-out', broker, 443, { cidrIpv4: '0.0.0.0/0' }, 'HTTPS: SSM, AWS APIs')
    egress('broker-http-out', broker, 80, { cidrIpv4: '0.0.0.0/0' }, 'HTTP: Debian package mirrors')

    this.loadBalancerGroupId = loadBalancer.id
    this.brokerGroupId = broker.id
    this.bastionGroupId = bastion.id
    this.redisGroupId = redis?.id
    this.registerOutputs({
      loadBalancerGroupId: this.loadBalancerGroupId,
      brokerGroupId: this.brokerGroupId,
      bastionGroupId: this.bastionGroupId,
      redisGroupId: this.redisGroupId,
    })
  }
}
