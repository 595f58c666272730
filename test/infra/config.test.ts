/*
 * Stack config validation and the pure helpers of the program, table-driven. No Pulumi engine:
 * these run in milliseconds.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { parse as parseYaml } from 'yaml'
import { configFromEnv } from '../../broker/config/env.js'
import { consoleHostKeyScript, hostKeyFromConsole, knownHostsLine, nodeUserData } from '../../infra/cloud-init.js'
import {
  CONFIG_DEFAULTS,
  CONFIG_KEYS,
  StackConfigError,
  architectureOf,
  bundleFileName,
  checkDeployFiles,
  checkIpv4Cidr,
  parseStackConfig,
  type RawStackConfig,
} from '../../infra/config.js'
import { subnetCidrs, selectZones } from '../../infra/network.js'
import { phaseCommand, renderNodeEnv } from '../../infra/node-env.js'
import { REPO_ROOT } from './harness.js'

const context = { packageVersion: '1.2.3', repoRoot: '/repo' }
const valid: RawStackConfig = { 'aws:region': 'eu-west-1', adminCidr: '203.0.113.7/32' }
const parse = (raw: RawStackConfig) => parseStackConfig({ ...valid, ...raw }, context)
const problemsOf = (raw: RawStackConfig): string[] => {
  try {
    parse(raw)
  } catch (err) {
    assert.ok(err instanceof StackConfigError, String(err))
    return [...err.problems]
  }
  return []
}

describe('parseStackConfig', () => {
  test('the defaults', () => {
    const config = parse({})
    assert.equal(config.nodeCount, 3)
    assert.equal(config.azCount, 3)
    assert.equal(config.instanceType, 't3.medium')
    assert.equal(config.architecture, 'x86_64')
    assert.deepEqual(config.mqttAllowedCidrs, ['0.0.0.0/0'])
    assert.deepEqual(config.certificate, { kind: 'self-signed' })
    assert.deepEqual(config.redis, { kind: 'colocated' })
    assert.deepEqual(config.ami, { kind: 'debian-12' })
    assert.equal(config.natGateways, 'single')
    assert.equal(config.wss, false)
    assert.equal(config.bastionArchitecture, 'arm64')
    assert.equal(config.bundlePath, '/repo/dist/fleetmq-1.2.3-linux-x64.tar.gz')
    assert.equal(config.bundleFileName, 'fleetmq-1.2.3-linux-x64.tar.gz')
    assert.equal(config.provisionDir, '/repo/scripts/provision')
    assert.equal(config.partition, 'aws')
    assert.ok(Object.isFrozen(config))
  })

  const accepted: Array<[string, RawStackConfig, (c: ReturnType<typeof parse>) => unknown, unknown]> = [
    ['Graviton takes the arm64 bundle', { instanceType: 'm7g.large' }, (c) => c.bundleFileName, 'fleetmq-1.2.3-linux-arm64.tar.gz'],
    ['bundlePath overrides the bundle', { bundlePath: '/tmp/b/x.tar.gz' }, (c) => [c.bundlePath, c.bundleFileName], ['/tmp/b/x.tar.gz', 'x.tar.gz']],
    ['relative bundlePath is from the repository', { bundlePath: 'out/x.tar.gz' }, (c) => c.bundlePath, '/repo/out/x.tar.gz'],
    ['certificateArn', { certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/0f0e0d0c-0b0a-4909-8807-060504030201' }, (c) => c.certificate.kind, 'arn'],
    ['domainName + hostedZoneId', { domainName: 'mqtt.example.com', hostedZoneId: 'Z0123456789ABCDEFGHIJ' }, (c) => c.certificate, { kind: 'acm-dns', domainName: 'mqtt.example.com', hostedZoneId: 'Z0123456789ABCDEFGHIJ' }],
    ['elasticache', { redis: 'elasticache', elasticacheNodeType: 'cache.r7g.large' }, (c) => c.redis, { kind: 'elasticache', nodeType: 'cache.r7g.large' }],
    ['2 nodes with elasticache', { redis: 'elasticache', nodeCount: '2' }, (c) => c.nodeCount, 2],
    ['an AMI id', { ami: 'ami-0123456789abcdef0' }, (c) => c.ami, { kind: 'id', id: 'ami-0123456789abcdef0' }],
    ['a list of CIDRs, duplicates dropped', { mqttAllowedCidrs: '["10.0.0.0/8","10.0.0.0/8","192.0.2.1/32"]' }, (c) => c.mqttAllowedCidrs, ['10.0.0.0/8', '192.0.2.1/32']],
    ['perAz NAT', { natGateways: 'perAz' }, (c) => c.natGateways, 'perAz'],
    ['wss', { wss: 'true' }, (c) => c.wss, true],
    ['vpcFlowLogs', { vpcFlowLogs: 'true' }, (c) => c.vpcFlowLogs, true],
    ['nlbAccessLogs', { nlbAccessLogs: 'true' }, (c) => c.nlbAccessLogs, true],
    ['China partition', { 'aws:region': 'cn-north-1' }, (c) => c.partition, 'aws-cn'],
    ['GovCloud partition', { 'aws:region': 'us-gov-west-1' }, (c) => c.partition, 'aws-us-gov'],
  ]
  for (const [what, raw, pick, expected] of accepted) {
    test(`accepts ${what}`, () => assert.deepEqual(pick(parse(raw)), expected))
  }

  const refused: Array<[string, RawStackConfig, RegExp]> = [
    ['no region', { 'aws:region': undefined }, /^aws:region: is required/],
    ['a bad region', { 'aws:region': 'Europe' }, /^aws:region: "Europe" is not an AWS region/],
    ['no adminCidr', { adminCidr: undefined }, /^adminCidr: is required/],
    ['adminCidr 0.0.0.0/0', { adminCidr: '0.0.0.0/0' }, /^adminCidr: must not be the whole internet/],
    ['adminCidr with host bits', { adminCidr: '203.0.113.7/24' }, /^adminCidr: "203\.0\.113\.7\/24" has host bits set; .* 203\.0\.113\.0\/24$/],
    ['adminCidr IPv6', { adminCidr: '2001:db8::/32' }, /^adminCidr: .* is not an IPv4 CIDR/],
    ['nodeCount 0', { nodeCount: '0' }, /^nodeCount: "0" is not allowed; use a whole number from 1 to 20$/],
    ['nodeCount 2.5', { nodeCount: '2.5' }, /^nodeCount: "2\.5" is not allowed/],
    ['nodeCount 21', { nodeCount: '21' }, /^nodeCount: "21" is not allowed/],
    ['nodeCount 2 with colocated Redis', { nodeCount: '2' }, /^nodeCount: 2 with redis colocated cannot survive/],
    ['azCount 7', { azCount: '7' }, /^azCount: "7" is not allowed; use a whole number from 1 to 6$/],
    ['instanceType nonsense', { instanceType: 'big' }, /^instanceType: "big" is not an EC2 instance type/],
    ['instanceType too small', { instanceType: 't3.micro' }, /^instanceType: "t3\.micro" has too little memory/],
    ['a Mac', { instanceType: 'mac2.metal' }, /^instanceType: "mac2\.metal" is not an EC2 instance type that runs Debian/],
    ['bastionInstanceType nonsense', { bastionInstanceType: 'tiny' }, /^bastionInstanceType: "tiny"/],
    ['mqttAllowedCidrs not a list', { mqttAllowedCidrs: '0.0.0.0/0' }, /^mqttAllowedCidrs: must be a non-empty list/],
    ['mqttAllowedCidrs empty', { mqttAllowedCidrs: '[]' }, /^mqttAllowedCidrs: must be a non-empty list/],
    ['mqttAllowedCidrs bad entry', { mqttAllowedCidrs: '["10.0.0.0/33"]' }, /^mqttAllowedCidrs: "10\.0\.0\.0\/33" is not an IPv4 CIDR/],
    ['certificateArn malformed', { certificateArn: 'arn:aws:iam::123456789012:role/x' }, /^certificateArn: .* is not an ACM certificate ARN/],
    ['certificateArn in another region', { certificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-0b0a-4909-8807-060504030201' }, /^certificateArn: is in us-east-1 but the stack deploys to eu-west-1/],
    ['domainName alone', { domainName: 'mqtt.example.com' }, /^domainName: needs hostedZoneId .* or certificateArn/],
    ['hostedZoneId alone', { hostedZoneId: 'Z0123456789ABCDEFGHIJ' }, /^hostedZoneId: needs domainName/],
    ['hostedZoneId malformed', { domainName: 'mqtt.example.com', hostedZoneId: 'example.com' }, /^hostedZoneId: "example\.com" is not a Route 53 hosted zone id/],
    ['a wildcard domainName', { domainName: '*.example.com', hostedZoneId: 'Z0123456789ABCDEFGHIJ' }, /^domainName: "\*\.example\.com" is not a lower-case DNS name/],
    ['redis unknown', { redis: 'memcached' }, /^redis: "memcached" is not allowed; use one of colocated, elasticache$/],
    ['elasticacheNodeType malformed', { redis: 'elasticache', elasticacheNodeType: 't4g.small' }, /^elasticacheNodeType: "t4g\.small" is not an ElastiCache node type/],
    ['ami malformed', { ami: 'debian' }, /^ami: "debian" is not allowed; use debian-12 .* or an AMI id/],
    ['natGateways unknown', { natGateways: 'none' }, /^natGateways: "none" is not allowed; use one of single, perAz$/],
    ['wss not a boolean', { wss: 'yes' }, /^wss: "yes" is not allowed; use true or false$/],
    ['vpcFlowLogs not a boolean', { vpcFlowLogs: 'on' }, /^vpcFlowLogs: "on" is not allowed; use true or false$/],
    ['sshUser malformed', { sshUser: 'Admin User' }, /^sshUser: "Admin User" is not a Linux user name/],
    ['bundlePath not a tarball', { bundlePath: 'dist/fleetmq.zip' }, /^bundlePath: "dist\/fleetmq\.zip" is not a \.tar\.gz bundle/],
    ['provisionDir not named provision', { provisionDir: 'scripts' }, /^provisionDir: "scripts" must be a folder named provision/],
  ]
  for (const [what, raw, message] of refused) {
    test(`refuses ${what}, naming the key and what is allowed`, () => {
      const problems = problemsOf(raw)
      assert.ok(problems.some((p) => message.test(p)), `expected ${message} in ${JSON.stringify(problems)}`)
    })
  }

  test('reports every problem at once', () => {
    const problems = problemsOf({ nodeCount: '0', azCount: '0', redis: 'x', adminCidr: undefined })
    assert.deepEqual(problems.map((p) => p.split(':')[0]).sort(), ['adminCidr', 'azCount', 'nodeCount', 'redis'])
  })
})

describe('Pulumi.yaml', () => {
  const project = parseYaml(readFileSync(join(REPO_ROOT, 'Pulumi.yaml'), 'utf8')) as {
    name: string
    main: string
    runtime: { name: string; options: Record<string, unknown> }
    config: Record<string, { type: string; description: string; default?: unknown; items?: { type: string } }>
  }

  test('is the fleetmq project, running infra/index.ts as ESM through tsx', () => {
    assert.equal(project.name, 'fleetmq')
    assert.equal(project.main, 'infra/index.ts')
    assert.equal(project.runtime.name, 'nodejs')
    assert.equal(project.runtime.options.typescript, false)
    assert.equal(project.runtime.options.nodeargs, '--import tsx')
    const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'))
    assert.equal(packageJson.type, 'module')
    assert.ok(packageJson.devDependencies.tsx, 'tsx is installed')
  })

  test('declares every key infra/config.ts reads, with a type and a description, and nothing else', () => {
    assert.deepEqual(Object.keys(project.config).sort(), [...CONFIG_KEYS].sort())
    for (const [key, declaration] of Object.entries(project.config)) {
      assert.ok(['string', 'integer', 'boolean', 'array'].includes(declaration.type), key)
      assert.ok(declaration.description.length > 20, key)
      if (declaration.type === 'array') assert.equal(declaration.items?.type, 'string', key)
    }
  })

  test('declares the same defaults as infra/config.ts', () => {
    const declared = Object.fromEntries(Object.entries(project.config).filter(([, d]) => d.default !== undefined).map(([k, d]) => [k, d.default]))
    assert.deepEqual(declared, JSON.parse(JSON.stringify(CONFIG_DEFAULTS)))
  })
})

describe('helpers', () => {
  const architectures: Array<[string, string]> = [
    ['t3.medium', 'x86_64'], ['m7i.large', 'x86_64'], ['c7a.xlarge', 'x86_64'], ['g4dn.xlarge', 'x86_64'], ['m7i-flex.large', 'x86_64'],
    ['t4g.medium', 'arm64'], ['m7g.large', 'arm64'], ['c7gn.large', 'arm64'], ['r7gd.xlarge', 'arm64'], ['m6g.large', 'arm64'],
    ['x2gd.large', 'arm64'], ['im4gn.large', 'arm64'], ['m8g.large', 'arm64'], ['a1.large', 'arm64'],
  ]
  for (const [type, architecture] of architectures) {
    test(`${type} is ${architecture}`, () => assert.equal(architectureOf(type), architecture))
  }

  test('bundle names follow npm run bundle', () => {
    assert.equal(bundleFileName('0.1.0', 'x86_64'), 'fleetmq-0.1.0-linux-x64.tar.gz')
    assert.equal(bundleFileName('0.1.0', 'arm64'), 'fleetmq-0.1.0-linux-arm64.tar.gz')
  })

  const cidrs: Array<[string, boolean]> = [
    ['0.0.0.0/0', true], ['10.0.0.0/8', true], ['203.0.113.7/32', true], ['10.1.0.0/16', true],
    ['10.1.0.0/8', false], ['256.0.0.0/8', false], ['10.0.0.0', false], ['10.0.0.0/33', false], ['::/0', false],
  ]
  for (const [cidr, ok] of cidrs) {
    test(`${cidr} is ${ok ? 'a' : 'not a'} canonical IPv4 CIDR`, () => assert.equal(checkIpv4Cidr(cidr) === undefined, ok))
  }

  test('checkDeployFiles names npm run bundle when the bundle is missing', () => {
    const config = { bundlePath: '/repo/dist/fleetmq-1.2.3-linux-x64.tar.gz', provisionDir: '/repo/scripts/provision' }
    assert.throws(() => checkDeployFiles(config, (p) => !p.endsWith('.tar.gz')), /bundlePath: \/repo\/dist\/fleetmq-1\.2\.3-linux-x64\.tar\.gz does not exist; run npm run bundle/)
    assert.throws(() => checkDeployFiles(config, (p) => p.endsWith('.tar.gz')), /provisionDir: \/repo\/scripts\/provision\/fleetmq-provision does not exist/)
    assert.doesNotThrow(() => checkDeployFiles(config, () => true))
  })

  test('subnets: /24 public, /19 private, no overlap', () => {
    assert.deepEqual(subnetCidrs(3), {
      public: ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24'],
      private: ['10.0.32.0/19', '10.0.64.0/19', '10.0.96.0/19'],
    })
    assert.equal(subnetCidrs(6).private[5], '10.0.192.0/19')
    assert.throws(() => subnetCidrs(7), /zoneCount: 7/)
  })

  test('zones: the first azCount, or an error naming azCount and what the region has', () => {
    assert.deepEqual(selectZones(['b', 'a', 'c'], 2, 'r'), ['a', 'b'])
    assert.throws(() => selectZones(['a', 'b'], 3, 'ap-northeast-3'), /^Error: azCount: 3 is more than the 2 availability zones ap-northeast-3 offers \(a, b\); set azCount to 2 or less$/)
  })

  test('phase commands', () => {
    assert.equal(
      phaseCommand('join', 'fleetmq-0.1.0-linux-x64.tar.gz'),
      'sudo bash /var/tmp/fleetmq-stage/provision/fleetmq-provision join --env /var/tmp/fleetmq-stage/node.env --bundle /var/tmp/fleetmq-stage/fleetmq-0.1.0-linux-x64.tar.gz',
    )
    assert.throws(() => phaseCommand('install', 'a b.tar.gz'), /plain file name/)
    assert.equal(phaseCommand('leave', ''), 'sudo bash /var/tmp/fleetmq-stage/provision/fleetmq-provision leave --env /var/tmp/fleetmq-stage/node.env', 'a phase without a bundle')
  })

  test('node.env reads back through the broker as the settings and provisioning keys', () => {
    const text = renderNodeEnv({
      clusterName: 'fleetmq-prod',
      nodeNumber: 2,
      nodeName: 'fleetmq-node-2',
      advertiseAddress: '10.0.64.5',
      seedAddress: '10.0.32.5',
      redis: { kind: 'colocated' },
      wss: false,
      peers: ['10.0.32.5', '10.0.64.5'],
      plaintextFrom: ['10.0.0.0/24', '10.0.1.0/24'],
    })
    const env = Object.fromEntries(text.split('\n').filter((l) => l.startsWith('FLEETMQ_')).map((l) => {
      const [, key, value] = /^([A-Z0-9_]+)='(.*)'$/.exec(l) ?? []
      return [key, value]
    }))
    assert.equal(env.FLEETMQ_PROVISION__ROLE, 'join')
    assert.equal(env.FLEETMQ_PROVISION__SEED, '10.0.32.5:18083')
    assert.equal(env.FLEETMQ_PROVISION__REDIS_ROLE, 'replica')
    assert.equal(env.FLEETMQ_PROVISION__REDIS_HOST, '10.0.32.5')
    assert.equal(env.FLEETMQ_PROVISION__NODE_NAME, 'fleetmq-node-2')
    // The host firewall's openings: cluster ports to the brokers, the PROXY v2 listener to the NLB's subnets.
    assert.equal(env.FLEETMQ_PROVISION__PEERS, '["10.0.32.5","10.0.64.5"]')
    assert.equal(env.FLEETMQ_PROVISION__PLAINTEXT_FROM, '["10.0.0.0/24","10.0.1.0/24"]')
    const settings = configFromEnv(env) as Record<string, any>
    assert.deepEqual(settings.listeners, [{ type: 'mqtt', port: 1883, proxyProtocol: 'required' }])
    // Below the NLB's 350 s idle timeout: 5.0 clients asking for Keep Alive 0 get 300 s.
    assert.deepEqual(settings.limits, { serverKeepAlive: 300 })
    assert.equal(settings.provision.advertiseAddress, '10.0.64.5')
    assert.deepEqual(settings.cluster, {
      name: 'fleetmq-prod',
      secretFile: '/etc/fleetmq/secrets/cluster-secret',
      nodeId: 'fleetmq-node-2',
      advertiseMgmt: '10.0.64.5:18083',
    })
  })

  test('node 1 carries the Redis backend: the local Sentinel, or ElastiCache over TLS; passwords as files', () => {
    const seed = { clusterName: 'c', nodeNumber: 1, nodeName: 'n-1', advertiseAddress: '10.0.32.5', seedAddress: '10.0.32.5', wss: false, peers: ['10.0.32.5'], plaintextFrom: ['10.0.0.0/24'] }
    const redisOf = (text: string) => (configFromEnv(Object.fromEntries(text.split('\n').filter((l) => l.startsWith('FLEETMQ_')).map((l) => {
      const [, key, value] = /^([A-Z0-9_]+)='(.*)'$/.exec(l) ?? []
      return [key, value]
    }))) as any).cluster.redis
    assert.deepEqual(redisOf(renderNodeEnv({ ...seed, redis: { kind: 'colocated' } })), {
      sentinels: ['127.0.0.1:26379'],
      name: 'fleetmq',
      passwordFile: '/etc/fleetmq/secrets/redis-password',
      // The co-located Sentinels require the Redis password too.
      sentinelPasswordFile: '/etc/fleetmq/secrets/redis-password',
    })
    assert.deepEqual(redisOf(renderNodeEnv({ ...seed, redis: { kind: 'elasticache', host: 'master.x.cache.amazonaws.com', port: 6379 } })), {
      url: 'rediss://master.x.cache.amazonaws.com:6379',
      passwordFile: '/etc/fleetmq/secrets/redis-password',
    })
  })

  test('user-data carries no host key (IMDS serves it to every local user) and turns password logins off; known_hosts pins a key', () => {
    for (const userData of [nodeUserData(), nodeUserData({ externalProvisioning: true })]) {
      assert.match(userData, /^#cloud-config\n/)
      assert.doesNotMatch(userData, /PRIVATE KEY|ssh_keys/)
    }
    assert.deepEqual(parseYaml(nodeUserData()), { ssh_pwauth: false, disable_root: true })
    assert.deepEqual(parseYaml(nodeUserData({ externalProvisioning: true })), { fleetmq: { provisioning: 'external' }, ssh_pwauth: false, disable_root: true })
    assert.equal(knownHostsLine('10.0.0.1', 'ssh-ed25519 AAAAkey comment\n'), '10.0.0.1 ssh-ed25519 AAAAkey')
  })

  // What cloud-init prints on an EC2 console (write-ssh-key-fingerprints), keys as a VM made them.
  const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5nQ0n0Rkq7mZxg0bqg3kQkq6u2mWl3yq8B0r1cX2dF'
  const CONSOLE = [
    '[   12.345678] cloud-init[612]: Cloud-init v. 22.4.2 running \'modules:final\'',
    'ec2: #############################################################',
    'ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----',
    'ec2: 256 SHA256:Zm9vYmFyYmF6 root@ip-10-0-32-10 (ED25519)',
    'ec2: -----END SSH HOST KEY FINGERPRINTS-----',
    '-----BEGIN SSH HOST KEY KEYS-----',
    'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFakeEcdsa= root@ip-10-0-32-10',
    `${ED25519} root@ip-10-0-32-10`,
    '-----END SSH HOST KEY KEYS-----',
    '[   13.000000] cloud-init[612]: Cloud-init v. 22.4.2 finished',
  ].join('\n')

  test('the host key is read from the VM\'s console output: the ed25519 key of the keys block, nothing before the block ends', () => {
    assert.equal(hostKeyFromConsole(CONSOLE), ED25519)
    assert.equal(hostKeyFromConsole(CONSOLE.replace(/-----END SSH HOST KEY KEYS-----[^]*$/, '')), undefined, 'a block still being written')
    assert.equal(hostKeyFromConsole('[    1.0] Linux version 6.1.0'), undefined, 'a console before cloud-init')
    assert.equal(hostKeyFromConsole(CONSOLE.replace(ED25519, '')), undefined, 'no ed25519 key')
  })

  test('the operator-side script waits for the key on the console (aws ec2 get-console-output) and prints it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleetmq-console-'))
    try {
      // A stand-in for the AWS CLI: the console is empty on the first call, then shows the keys.
      writeFileSync(join(dir, 'aws'), `#!/usr/bin/env bash\necho "$*" >> "${dir}/calls"\nif [ -f "${dir}/booted" ]; then cat "${dir}/console"; else touch "${dir}/booted"; echo; fi\n`, { mode: 0o755 })
      writeFileSync(join(dir, 'console'), CONSOLE)
      writeFileSync(join(dir, 'sleep'), '#!/usr/bin/env bash\n', { mode: 0o755 })
      const script = consoleHostKeyScript({ region: 'eu-west-1', instanceId: 'i-0123456789abcdef0', timeoutSeconds: 60 })
      const result = spawnSync('bash', ['-c', script], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } })
      assert.equal(result.status, 0, result.stderr)
      assert.equal(result.stdout, `${ED25519}\n`)
      const calls = readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n')
      assert.equal(calls.length, 2, 'asked again until the keys showed')
      assert.equal(calls[0], 'ec2 get-console-output --region eu-west-1 --instance-id i-0123456789abcdef0 --latest --output text --query Output')
      // A VM whose console never shows the keys: the script gives up at its deadline, naming the VM.
      writeFileSync(join(dir, 'console'), 'no keys here\n')
      const missing = spawnSync('bash', ['-c', consoleHostKeyScript({ region: 'eu-west-1', instanceId: 'i-0123456789abcdef0', timeoutSeconds: 0 })],
        { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } })
      assert.equal(missing.status, 1)
      assert.match(missing.stderr, /i-0123456789abcdef0: no SSH host key on its console within 0 s/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
