/*
 * One Graviton node in one AZ on an AMI built by images/aws, with a certificate already in ACM
 * and the domain name devices use.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkDeployment } from './deployment-checks.js'
import { ofType, runProgram } from './harness.js'

const certificateArn = 'arn:aws:acm:eu-west-1:123456789012:certificate/0f0e0d0c-0b0a-4909-8807-060504030201'
const run = await runProgram(
  {
    adminCidr: '203.0.113.7/32',
    instanceType: 'm7g.large',
    ami: 'ami-0123456789abcdef0',
    nodeCount: '1',
    azCount: '1',
    certificateArn,
    domainName: 'broker.example.org',
  },
  { customAmiArchitecture: 'arm64' },
)

checkDeployment(run, {
  nodeCount: 1,
  azCount: 1,
  wss: false,
  redis: 'colocated',
  natGateways: 1,
  mqttAllowedCidrs: ['0.0.0.0/0'],
  adminCidr: '203.0.113.7/32',
  endpointHost: 'broker.example.org',
})

test('the broker runs the given AMI, checked to be arm64 like m7g.large', () => {
  const node = ofType(run, 'aws:ec2/instance:Instance').find((i) => i.name === 'fleetmq-node-1')
  assert.equal(node?.inputs.ami, 'ami-0123456789abcdef0')
  assert.equal(node?.inputs.instanceType, 'm7g.large')
  const lookup = run.calls.find((c) => c.token === 'aws:ec2/getAmi:getAmi' && c.inputs.filters.some((f: any) => f.name === 'image-id'))
  assert.deepEqual(lookup?.inputs.filters, [{ name: 'image-id', values: ['ami-0123456789abcdef0'] }])
})

test('the listener uses the given certificate; nothing is issued, imported or written to DNS', () => {
  assert.equal(ofType(run, 'aws:lb/listener:Listener')[0].inputs.certificateArn, certificateArn)
  assert.equal(ofType(run, 'aws:acm/certificate:Certificate').length, 0)
  assert.equal(ofType(run, 'aws:route53/record:Record').length, 0)
})

test('a single node starts the cluster alone: no join, no leave', () => {
  assert.equal(ofType(run, 'command:remote:Command').filter((c) => c.name.endsWith('-join')).length, 0)
})
