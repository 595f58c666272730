/*
 * FleetMQ on AWS: wires the components and exports what operators and devices need.
 * Config is read and validated first (infra/config.ts); nothing is planned if it is wrong.
 */
import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import { knownHosts as renderKnownHosts, managementTunnelCommand } from './access.js'
import { brokerAmi, debianAmi } from './ami.js'
import { Bastion } from './bastion.js'
import { BrokerNodes } from './broker-nodes.js'
import { Certificate } from './certificate.js'
import { ClusterSecrets } from './cluster-secrets.js'
import { loadStackConfig } from './config.js'
import { ElastiCache } from './elasticache.js'
import { LoadBalancer } from './load-balancer.js'
import { LogBucket } from './log-bucket.js'
import { Network, selectZones } from './network.js'
import { PORTS } from './ports.js'
import { Provisioning } from './provisioning.js'
import { PublicAddresses } from './public-addresses.js'
import { SecurityGroups } from './security-groups.js'

const config = loadStackConfig()
const name = config.name

// Local Zones and Wavelength zones are opt-in; brokers and the NLB stay in the region's own zones.
const zones = await aws.getAvailabilityZones({ state: 'available', filters: [{ name: 'opt-in-status', values: ['opt-in-not-required'] }] })
const availabilityZones = selectZones(zones.names, config.azCount, config.region)
const [brokerAmiId, bastionAmiId] = await Promise.all([brokerAmi(config), debianAmi(config.bastionArchitecture)])

const logs = config.vpcFlowLogs || config.nlbAccessLogs
  ? new LogBucket(`${name}-logs`, { accountId: aws.getCallerIdentityOutput().accountId })
  : undefined
const network = new Network(name, {
  availabilityZones,
  natGateways: config.natGateways,
  flowLogBucketArn: config.vpcFlowLogs ? logs?.arn : undefined,
})
const securityGroups = new SecurityGroups(name, {
  vpcId: network.vpcId,
  mqttAllowedCidrs: config.mqttAllowedCidrs,
  adminCidr: config.adminCidr,
  wss: config.wss,
  redis: config.redis.kind,
})
const secrets = new ClusterSecrets(name)
const addresses = new PublicAddresses(`${name}-ip`, { subnetCount: network.publicSubnetIds.length })
const certificate = new Certificate(`${name}-tls`, { source: config.certificate, region: config.region, publicIps: addresses.publicIps })

const bastion = new Bastion(`${name}-bastion`, {
  instanceType: config.bastionInstanceType,
  amiId: bastionAmiId,
  subnetId: network.publicSubnetIds[0],
  securityGroupId: securityGroups.bastionGroupId,
  keyName: secrets.keyName,
  region: config.region,
})
const brokers = new BrokerNodes(`${name}-node`, {
  count: config.nodeCount,
  instanceType: config.instanceType,
  amiId: brokerAmiId,
  subnetIds: network.privateSubnetIds,
  securityGroupId: securityGroups.brokerGroupId,
  keyName: secrets.keyName,
  partition: config.partition,
  region: config.region,
})
const elasticache =
  config.redis.kind === 'elasticache' && securityGroups.redisGroupId
    ? new ElastiCache(`${name}-redis`, {
        nodeType: config.redis.nodeType,
        subnetIds: network.privateSubnetIds,
        securityGroupId: securityGroups.redisGroupId,
        authToken: secrets.redisPassword,
      })
    : undefined

const domainName = config.certificate.kind === 'self-signed' ? undefined : config.certificate.domainName
const hostedZoneId = config.certificate.kind === 'self-signed' ? undefined : config.certificate.hostedZoneId
const loadBalancer = new LoadBalancer(`${name}-nlb`, {
  vpcId: network.vpcId,
  publicSubnetIds: network.publicSubnetIds,
  allocationIds: addresses.allocationIds,
  securityGroupId: securityGroups.loadBalancerGroupId,
  certificateArn: certificate.certificateArn,
  instanceIds: brokers.instanceIds,
  wss: config.wss,
  dns: domainName !== undefined && hostedZoneId !== undefined ? { domainName, hostedZoneId } : undefined,
  accessLogBucket: config.nlbAccessLogs ? logs?.bucket : undefined,
})

new Provisioning(`${name}-provision`, {
  clusterName: `${name}-${pulumi.getStack()}`,
  nodes: brokers.nodes,
  bastion: { host: bastion.publicIp, hostPublicKey: bastion.hostPublicKey },
  sshUser: config.sshUser,
  sshPrivateKey: secrets.sshPrivateKey,
  bundlePath: config.bundlePath,
  bundleFileName: config.bundleFileName,
  provisionDir: config.provisionDir,
  redis: elasticache ? { kind: 'elasticache', host: elasticache.primaryEndpoint, port: elasticache.port } : { kind: 'colocated' },
  wss: config.wss,
  loadBalancerCidrs: network.publicSubnetCidrs,
  secrets: { clusterSecret: secrets.clusterSecret, adminPassword: secrets.adminPassword, redisPassword: secrets.redisPassword },
})

const host: pulumi.Output<string> = domainName !== undefined ? pulumi.output(domainName) : loadBalancer.dnsName

/** What devices connect to. */
export const endpoint = pulumi.interpolate`mqtts://${host}:${PORTS.mqtts}`
export const wssEndpoint = config.wss ? pulumi.interpolate`wss://${host}/mqtt` : undefined
/** The static public IPs of the endpoint, one per zone: for devices and firewalls configured by address. */
export const elasticIps = pulumi.all(addresses.publicIps)
export const loadBalancerDnsName = loadBalancer.dnsName
/** Where the VPC flow logs and NLB access logs go, when either is on. */
export const logBucket = logs?.bucket
export const bastionAddress = bastion.publicIp
export const nodePrivateAddresses = pulumi.all(brokers.privateIps)
/** The CA devices must trust (self-signed), or a note that the system trust store is enough. */
export const deviceCa =
  certificate.deviceCaPem ?? pulumi.output('A public CA (Amazon Trust Services) signs the certificate: devices need only their system trust store.')
export const adminCredentials = pulumi.secret(pulumi.all([secrets.adminPassword]).apply(([password]) => ({ username: 'admin', password })))
export const sshPrivateKey = secrets.sshPrivateKey
/** `known_hosts` pinning the bastion and the nodes (the same keys every remote command pins). */
export const knownHosts = pulumi
  .all([bastion.publicIp, bastion.hostPublicKey, pulumi.all(brokers.privateIps), pulumi.all(brokers.nodes.map((n) => n.hostPublicKey))])
  .apply(([bastionIp, bastionKey, nodeIps, nodeKeys]) =>
    renderKnownHosts([{ address: bastionIp, publicKey: bastionKey }, ...nodeIps.map((address, i) => ({ address, publicKey: nodeKeys[i] }))]),
  )
/** Opens the management API of node 1 on https://127.0.0.1:18083 through the bastion. */
export const managementApiCommand = pulumi
  .all([bastion.publicIp, brokers.privateIps[0]])
  .apply(([bastionIp, nodeIp]) => managementTunnelCommand({ user: config.sshUser, bastion: bastionIp, node: nodeIp }))
