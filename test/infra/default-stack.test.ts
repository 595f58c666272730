/*
 * The default stack: only the required config set (aws:region, adminCidr) and the test bundle.
 * 3 nodes over 3 AZs, Redis co-located, one NAT gateway, a self-signed certificate.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkDeployment } from './deployment-checks.js'
import { DEBIAN_OWNER, ofType, runProgram } from './harness.js'

const run = await runProgram({ adminCidr: '203.0.113.7/32' })

checkDeployment(run, {
  nodeCount: 3,
  azCount: 3,
  wss: false,
  redis: 'colocated',
  natGateways: 1,
  mqttAllowedCidrs: ['0.0.0.0/0'],
  adminCidr: '203.0.113.7/32',
})

test('brokers and bastion run the official Debian 12 AMI for their architecture', () => {
  const amiCalls = run.calls.filter((c) => c.token === 'aws:ec2/getAmi:getAmi')
  assert.equal(amiCalls.length, 2)
  for (const call of amiCalls) {
    assert.deepEqual(call.inputs.owners, [DEBIAN_OWNER])
    assert.equal(call.inputs.mostRecent, true)
  }
  const names = amiCalls.map((c) => c.inputs.filters.find((f: any) => f.name === 'name').values[0]).sort()
  assert.deepEqual(names, ['debian-12-amd64-*', 'debian-12-arm64-*'])
  const instances = ofType(run, 'aws:ec2/instance:Instance')
  assert.deepEqual(instances.filter((i) => i.name !== 'fleetmq-bastion').map((i) => [i.inputs.ami, i.inputs.instanceType]), [
    ['ami-debian12x860000', 't3.medium'],
    ['ami-debian12x860000', 't3.medium'],
    ['ami-debian12x860000', 't3.medium'],
  ])
  const bastion = instances.find((i) => i.name === 'fleetmq-bastion')
  assert.deepEqual([bastion?.inputs.ami, bastion?.inputs.instanceType], ['ami-debian12arm0000', 't4g.nano'])
})

test('availability zones come from the region, opt-in zones left out', () => {
  const call = run.calls.find((c) => c.token === 'aws:index/getAvailabilityZones:getAvailabilityZones')
  assert.equal(call?.inputs.state, 'available')
  assert.deepEqual(call?.inputs.filters, [{ name: 'opt-in-status', values: ['opt-in-not-required'] }])
})

test('self-signed certificate: a private CA, a server certificate naming the Elastic IPs and the NLB name, imported into ACM, with a warning', () => {
  assert.ok(run.warnings.some((w) => /self-signed certificate for testing only/.test(w)))
  const request = ofType(run, 'tls:index/certRequest:CertRequest')[0]
  assert.deepEqual(request.inputs.ipAddresses, run.outputs.elasticIps)
  assert.deepEqual(request.inputs.dnsNames, ['*.elb.eu-west-1.amazonaws.com'])
  const ca = ofType(run, 'tls:index/selfSignedCert:SelfSignedCert')[0]
  assert.equal(ca.inputs.isCaCertificate, true)
  const [imported] = ofType(run, 'aws:acm/certificate:Certificate')
  assert.equal(imported.inputs.certificateChain, ca.state.certPem)
  assert.ok(imported.inputs.certificateBody && imported.inputs.privateKey)
  assert.equal(imported.inputs.validationMethod, undefined)
  assert.equal(run.outputs.deviceCa, ca.state.certPem)
  assert.equal(ofType(run, 'aws:route53/record:Record').length, 0)
})

test('the resource graph of the default stack', () => {
  const counts: Record<string, number> = {}
  for (const r of run.resources) counts[r.type] = (counts[r.type] ?? 0) + 1
  assert.deepEqual(counts, {
    'pulumi:pulumi:Stack': 1,
    'fleetmq:aws:Network': 1,
    'fleetmq:aws:SecurityGroups': 1,
    'fleetmq:aws:ClusterSecrets': 1,
    'fleetmq:aws:PublicAddresses': 1,
    'fleetmq:aws:Certificate': 1,
    'fleetmq:aws:Bastion': 1,
    'fleetmq:aws:BrokerNodes': 1,
    'fleetmq:aws:LoadBalancer': 1,
    'fleetmq:aws:Provisioning': 1,
    'aws:ec2/vpc:Vpc': 1,
    'aws:ec2/internetGateway:InternetGateway': 1,
    'aws:ec2/subnet:Subnet': 6,
    'aws:ec2/routeTable:RouteTable': 4,
    'aws:ec2/routeTableAssociation:RouteTableAssociation': 6,
    'aws:ec2/eip:Eip': 4,
    'aws:ec2/natGateway:NatGateway': 1,
    'aws:ec2/defaultSecurityGroup:DefaultSecurityGroup': 1,
    'aws:ec2/securityGroup:SecurityGroup': 3,
    'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule': 7,
    'aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule': 7,
    'aws:ec2/keyPair:KeyPair': 1,
    'aws:ec2/instance:Instance': 4,
    'aws:iam/role:Role': 1,
    'aws:iam/rolePolicyAttachment:RolePolicyAttachment': 1,
    'aws:iam/instanceProfile:InstanceProfile': 1,
    'aws:lb/loadBalancer:LoadBalancer': 1,
    'aws:lb/targetGroup:TargetGroup': 1,
    'aws:lb/listener:Listener': 1,
    'aws:lb/targetGroupAttachment:TargetGroupAttachment': 3,
    'aws:acm/certificate:Certificate': 1,
    // The SSH key pair and the certificate keys; host keys are made on the VMs.
    'tls:index/privateKey:PrivateKey': 3,
    'command:local:Command': 4,
    'tls:index/selfSignedCert:SelfSignedCert': 1,
    'tls:index/certRequest:CertRequest': 1,
    'tls:index/locallySignedCert:LocallySignedCert': 1,
    'random:index/randomPassword:RandomPassword': 3,
    // Per node: stage, node.env, 3 secret files, install, configure, upgrade; join on nodes 2 and 3.
    'command:remote:Command': 3 * 8 + 2,
    'command:remote:CopyToRemote': 6,
  })
})

test('flow logs and NLB access logs are off by default: no log bucket, no flow log, no access logs', () => {
  assert.equal(ofType(run, 'aws:s3/bucket:Bucket').length, 0)
  assert.equal(ofType(run, 'aws:ec2/flowLog:FlowLog').length, 0)
  assert.equal(ofType(run, 'aws:lb/loadBalancer:LoadBalancer')[0].inputs.accessLogs, undefined)
  assert.equal(run.outputs.logBucket, undefined)
})
