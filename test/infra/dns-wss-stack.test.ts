/*
 * An ACM certificate for domainName validated by DNS in hostedZoneId, WebSocket + TLS on 443.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { checkDeployment } from './deployment-checks.js'
import { ofType, runProgram } from './harness.js'

const run = await runProgram({
  adminCidr: '203.0.113.7/32',
  domainName: 'mqtt.example.com',
  hostedZoneId: 'Z0123456789ABCDEFGHIJ',
  wss: 'true',
})

checkDeployment(run, {
  nodeCount: 3,
  azCount: 3,
  wss: true,
  redis: 'colocated',
  natGateways: 1,
  mqttAllowedCidrs: ['0.0.0.0/0'],
  adminCidr: '203.0.113.7/32',
  endpointHost: 'mqtt.example.com',
})

test('ACM issues the certificate for domainName, validated by a DNS record in the zone, and the listeners wait for validation', () => {
  const [certificate] = ofType(run, 'aws:acm/certificate:Certificate')
  assert.equal(certificate.inputs.domainName, 'mqtt.example.com')
  assert.equal(certificate.inputs.validationMethod, 'DNS')
  assert.equal(certificate.inputs.privateKey, undefined)
  const records = ofType(run, 'aws:route53/record:Record')
  const validation = records.find((r) => r.name === 'fleetmq-tls-validation')
  assert.deepEqual(
    [validation?.inputs.zoneId, validation?.inputs.name, validation?.inputs.type, validation?.inputs.records],
    ['Z0123456789ABCDEFGHIJ', '_x.mqtt.example.com.', 'CNAME', ['_y.acm-validations.aws.']],
  )
  const [waiter] = ofType(run, 'aws:acm/certificateValidation:CertificateValidation')
  assert.deepEqual(waiter.inputs.validationRecordFqdns, ['_x.mqtt.example.com'])
  for (const listener of ofType(run, 'aws:lb/listener:Listener')) assert.equal(listener.inputs.certificateArn, waiter.state.certificateArn)
  assert.equal(ofType(run, 'tls:index/selfSignedCert:SelfSignedCert').length, 0)
  assert.ok(!run.warnings.some((w) => /self-signed/.test(w)))
})

test('an alias record points domainName at the NLB', () => {
  const alias = ofType(run, 'aws:route53/record:Record').find((r) => r.name === 'fleetmq-nlb-alias')
  assert.equal(alias?.inputs.type, 'A')
  assert.equal(alias?.inputs.name, 'mqtt.example.com')
  assert.deepEqual(alias?.inputs.aliases, [{ name: run.outputs.loadBalancerDnsName, zoneId: 'Z2IFOLAFXWLO4F', evaluateTargetHealth: true }])
})

test('endpoints and device trust use the domain name and the public CA', () => {
  assert.equal(run.outputs.endpoint, 'mqtts://mqtt.example.com:8883')
  assert.equal(run.outputs.wssEndpoint, 'wss://mqtt.example.com/mqtt')
  assert.match(String(run.outputs.deviceCa), /system trust store/)
})

test('node.env adds the WebSocket listener behind PROXY v2', () => {
  const env = ofType(run, 'command:remote:Command').find((c) => c.name.endsWith('node-1-node-env'))
  assert.match(env?.inputs.stdin, /^FLEETMQ_LISTENERS='\[\{"type":"mqtt","port":1883,"proxyProtocol":"required"\},\{"type":"ws","port":8083,"proxyProtocol":"required","path":"\/mqtt"\}\]'$/m)
})
