/*
 * vpcFlowLogs and nlbAccessLogs on: one private log bucket, written only by AWS' log delivery for
 * this account, the VPC's flow logs and the NLB's access logs in it. Off (the default) is checked
 * in default-stack.test.ts.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { LOG_RETENTION_DAYS } from '../../infra/log-bucket.js'
import { checkDeployment } from './deployment-checks.js'
import { named, ofType, runProgram } from './harness.js'

const run = await runProgram({ adminCidr: '203.0.113.7/32', vpcFlowLogs: 'true', nlbAccessLogs: 'true' })

checkDeployment(run, {
  nodeCount: 3,
  azCount: 3,
  wss: false,
  redis: 'colocated',
  natGateways: 1,
  mqttAllowedCidrs: ['0.0.0.0/0'],
  adminCidr: '203.0.113.7/32',
})

test('one log bucket: public access blocked, SSE-S3, ACLs off, logs expire, TLS only', () => {
  assert.equal(ofType(run, 'aws:s3/bucket:Bucket').length, 1)
  const block = ofType(run, 'aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock')[0].inputs
  assert.deepEqual([block.blockPublicAcls, block.blockPublicPolicy, block.ignorePublicAcls, block.restrictPublicBuckets], [true, true, true, true])
  assert.equal(ofType(run, 'aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration')[0].inputs.rules[0].applyServerSideEncryptionByDefault.sseAlgorithm, 'AES256')
  assert.equal(ofType(run, 'aws:s3/bucketOwnershipControls:BucketOwnershipControls')[0].inputs.rule.objectOwnership, 'BucketOwnerEnforced')
  assert.equal(ofType(run, 'aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration')[0].inputs.rules[0].expiration.days, LOG_RETENTION_DAYS)
  const policy = JSON.parse(ofType(run, 'aws:s3/bucketPolicy:BucketPolicy')[0].inputs.policy) as { Statement: Array<Record<string, any>> }
  const write = policy.Statement.find((s) => s.Sid === 'LogDeliveryWrite')
  assert.deepEqual(write?.Principal, { Service: 'delivery.logs.amazonaws.com' })
  assert.equal(write?.Resource, 'arn:aws:s3:::fleetmq-logs-bucket/AWSLogs/123456789012/*', 'only under this account\'s prefix')
  assert.deepEqual(write?.Condition, { StringEquals: { 'aws:SourceAccount': '123456789012' } })
  assert.ok(policy.Statement.some((s) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'))
  assert.equal(run.outputs.logBucket, 'fleetmq-logs-bucket')
})

test('VPC flow logs (accepted and rejected traffic) and NLB access logs go to the log bucket', () => {
  const [flowLog] = ofType(run, 'aws:ec2/flowLog:FlowLog')
  assert.equal(flowLog.inputs.vpcId, `${named(run, 'fleetmq-vpc').name}-id`)
  assert.equal(flowLog.inputs.trafficType, 'ALL')
  assert.equal(flowLog.inputs.logDestinationType, 's3')
  assert.equal(flowLog.inputs.logDestination, 'arn:aws:s3:::fleetmq-logs-bucket')
  const [nlb] = ofType(run, 'aws:lb/loadBalancer:LoadBalancer')
  assert.deepEqual(nlb.inputs.accessLogs, { bucket: 'fleetmq-logs-bucket', prefix: 'nlb', enabled: true })
})
