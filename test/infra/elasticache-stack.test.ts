/*
 * redis elasticache, 4 nodes over 2 AZs, a NAT gateway per AZ, two device networks.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkDeployment, isSecretInput, plain } from './deployment-checks.js'
import { named, ofType, runProgram } from './harness.js'

const cidrs = ['198.51.100.0/24', '192.0.2.0/25']
const run = await runProgram({
  adminCidr: '203.0.113.0/28',
  redis: 'elasticache',
  nodeCount: '4',
  azCount: '2',
  natGateways: 'perAz',
  mqttAllowedCidrs: JSON.stringify(cidrs),
})

checkDeployment(run, {
  nodeCount: 4,
  azCount: 2,
  wss: false,
  redis: 'elasticache',
  natGateways: 2,
  mqttAllowedCidrs: cidrs,
  adminCidr: '203.0.113.0/28',
})

test('ElastiCache: encrypted at rest and in transit, AUTH token from the generated Redis password, Multi-AZ with failover', () => {
  const [group] = ofType(run, 'aws:elasticache/replicationGroup:ReplicationGroup')
  assert.equal(ofType(run, 'aws:elasticache/replicationGroup:ReplicationGroup').length, 1)
  assert.equal(group.inputs.engine, 'redis')
  assert.equal(group.inputs.nodeType, 'cache.t4g.small')
  assert.equal(group.inputs.atRestEncryptionEnabled, true)
  assert.equal(group.inputs.transitEncryptionEnabled, true)
  assert.ok(isSecretInput(group.inputs.authToken))
  assert.equal(plain(group.inputs.authToken), 'secret-of-fleetmq-redis-password')
  assert.equal(group.inputs.numCacheClusters, 2)
  assert.equal(group.inputs.automaticFailoverEnabled, true)
  assert.equal(group.inputs.multiAzEnabled, true)
  assert.deepEqual(group.inputs.securityGroupIds, ['fleetmq-redis-id'])
  const [subnets] = ofType(run, 'aws:elasticache/subnetGroup:SubnetGroup')
  assert.deepEqual(subnets.inputs.subnetIds, ['fleetmq-private-1-id', 'fleetmq-private-2-id'])
})

test('Redis accepts 6379 from the brokers only; no Redis or Sentinel port between brokers', () => {
  const ingress = ofType(run, 'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule').map((r) => r.inputs)
  assert.deepEqual(
    ingress.filter((r) => r.securityGroupId === named(run, 'fleetmq-redis').name + '-id'),
    [{ securityGroupId: 'fleetmq-redis-id', ipProtocol: 'tcp', fromPort: 6379, toPort: 6379, referencedSecurityGroupId: 'fleetmq-broker-id', description: 'Redis (TLS) from the brokers' }],
  )
  assert.equal(ingress.filter((r) => r.fromPort === 26379).length, 0)
})

test('node.env points every node at the ElastiCache primary over TLS', () => {
  const env = ofType(run, 'command:remote:Command').filter((c) => c.name.endsWith('-node-env'))
  assert.equal(env.length, 4)
  for (const command of env) {
    assert.match(command.inputs.stdin, /^FLEETMQ_PROVISION__REDIS_ROLE='external'$/m)
    assert.match(command.inputs.stdin, /^FLEETMQ_PROVISION__REDIS_HOST='master\.fleetmq-redis\.abc123\.euw1\.cache\.amazonaws\.com'$/m)
    assert.match(command.inputs.stdin, /^FLEETMQ_PROVISION__REDIS_PORT='6379'$/m)
    assert.match(command.inputs.stdin, /^FLEETMQ_PROVISION__REDIS_TLS='true'$/m)
  }
})

test('a NAT gateway in each public subnet, each private route table through its own zone', () => {
  const nats = ofType(run, 'aws:ec2/natGateway:NatGateway')
  assert.deepEqual(nats.map((n) => n.inputs.subnetId), ['fleetmq-public-1-id', 'fleetmq-public-2-id'])
  const routes = ofType(run, 'aws:ec2/routeTable:RouteTable').filter((r) => r.name.includes('private'))
  assert.deepEqual(routes.map((r) => r.inputs.routes[0].natGatewayId), ['fleetmq-nat-1-id', 'fleetmq-nat-2-id'])
})

test('nodes 2 to 4 join node 1; the four nodes alternate between the two zones', () => {
  const joins = ofType(run, 'command:remote:Command').filter((c) => c.name.endsWith('-join'))
  assert.deepEqual(joins.map((j) => j.name), [2, 3, 4].map((n) => `fleetmq-provision-fleetmq-node-${n}-join`))
  assert.deepEqual(
    [1, 2, 3, 4].map((n) => named(run, `fleetmq-node-${n}`).inputs.subnetId),
    ['fleetmq-private-1-id', 'fleetmq-private-2-id', 'fleetmq-private-1-id', 'fleetmq-private-2-id'],
  )
})
