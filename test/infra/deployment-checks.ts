/*
 * The properties every variant of the stack must have, registered as tests on one program run.
 * Each variant file plans the program with its config and calls `checkDeployment`.
 */
import assert from 'node:assert/strict'
import { basename } from 'node:path'
import { test } from 'node:test'
import { configFromEnv } from '../../broker/config/env.js'
import { listFiles, hashDirectory, hashFile } from '../../infra/content-hash.js'
import { TLS_POLICY } from '../../infra/load-balancer.js'
import { PROVISION_ENTRY_POINT } from '../../infra/config.js'
import { ofType, named, type ProgramRun, type RecordedResource } from './harness.js'

const SECRET_SIG = '4dabf18193072939515e22adb298388d'

/** Inputs with Pulumi's secret wrappers removed. */
export function plain(value: any): any {
  if (Array.isArray(value)) return value.map(plain)
  if (value && typeof value === 'object') {
    if (SECRET_SIG in value) return plain(value.value)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  }
  return value
}

export function isSecretInput(value: any): boolean {
  return Boolean(value && typeof value === 'object' && SECRET_SIG in value)
}

export interface Expected {
  nodeCount: number
  azCount: number
  wss: boolean
  redis: 'colocated' | 'elasticache'
  natGateways: number
  mqttAllowedCidrs: string[]
  adminCidr: string
  /** Expected endpoint host; undefined = the NLB DNS name. */
  endpointHost?: string
}

const STAGE = '/var/tmp/fleetmq-stage'
const PRIVATE_PORTS = [1883, 8083, 18083, 6379, 26379, 22]

const idOf = (r: RecordedResource): string => `${r.name}-id`
const groupId = (run: ProgramRun, name: string): string => idOf(named(run, name))

export function checkDeployment(run: ProgramRun, expected: Expected): void {
  const sg = { nlb: groupId(run, 'fleetmq-nlb'), broker: groupId(run, 'fleetmq-broker'), bastion: groupId(run, 'fleetmq-bastion') }
  const ingress = ofType(run, 'aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule').map((r) => r.inputs)
  const egress = ofType(run, 'aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule').map((r) => r.inputs)
  const instances = ofType(run, 'aws:ec2/instance:Instance')
  const brokers = instances.filter((i) => i.inputs.tags?.['fleetmq:role'] === 'broker')
  const bastion = instances.find((i) => i.inputs.tags?.['fleetmq:role'] === 'bastion')
  const publicSubnets = ofType(run, 'aws:ec2/subnet:Subnet').filter((s) => s.inputs.tags?.Tier === 'public')
  const privateSubnets = ofType(run, 'aws:ec2/subnet:Subnet').filter((s) => s.inputs.tags?.Tier === 'private')
  const commands = ofType(run, 'command:remote:Command')
  const copies = ofType(run, 'command:remote:CopyToRemote')

  test('network: one VPC, a public and a private subnet per AZ, NAT gateways, routes', () => {
    assert.equal(ofType(run, 'aws:ec2/vpc:Vpc').length, 1)
    assert.equal(publicSubnets.length, expected.azCount)
    assert.equal(privateSubnets.length, expected.azCount)
    assert.equal(new Set(publicSubnets.map((s) => s.inputs.availabilityZone)).size, expected.azCount)
    for (const subnet of [...publicSubnets, ...privateSubnets]) assert.equal(subnet.inputs.mapPublicIpOnLaunch, false, subnet.name)
    assert.equal(ofType(run, 'aws:ec2/internetGateway:InternetGateway').length, 1)
    assert.equal(ofType(run, 'aws:ec2/natGateway:NatGateway').length, expected.natGateways)
    const privateRoutes = ofType(run, 'aws:ec2/routeTable:RouteTable').filter((r) => r.name.includes('private'))
    assert.equal(privateRoutes.length, expected.azCount)
    for (const table of privateRoutes) {
      assert.deepEqual(table.inputs.routes.map((route: any) => route.cidrBlock), ['0.0.0.0/0'])
      assert.ok(table.inputs.routes[0].natGatewayId, `${table.name} routes out through NAT`)
    }
  })

  test('security groups have no inline rules, so the default allow-all egress is gone', () => {
    for (const group of ofType(run, 'aws:ec2/securityGroup:SecurityGroup')) {
      assert.equal(group.inputs.ingress, undefined, group.name)
      assert.equal(group.inputs.egress, undefined, group.name)
    }
  })

  test('only the NLB (8883, 443 with wss) and the bastion (SSH from adminCidr) accept traffic from addresses', () => {
    const fromAddresses = ingress.filter((r) => r.cidrIpv4 !== undefined || r.cidrIpv6 !== undefined)
    const expectedRules = [
      ...expected.mqttAllowedCidrs.map((cidr) => `${sg.nlb} 8883 ${cidr}`),
      ...(expected.wss ? expected.mqttAllowedCidrs.map((cidr) => `${sg.nlb} 443 ${cidr}`) : []),
      `${sg.bastion} 22 ${expected.adminCidr}`,
    ].sort()
    assert.deepEqual(fromAddresses.map((r) => `${r.securityGroupId} ${r.fromPort} ${r.cidrIpv4}`).sort(), expectedRules)
    for (const rule of ingress) {
      assert.equal(rule.ipProtocol, 'tcp')
      assert.equal(rule.fromPort, rule.toPort, 'one port per rule')
    }
  })

  test('no broker, Redis, Sentinel, management or SSH port is open to any address', () => {
    for (const rule of ingress.filter((r) => PRIVATE_PORTS.includes(r.fromPort) && r.securityGroupId !== sg.bastion)) {
      assert.equal(rule.cidrIpv4, undefined, `port ${rule.fromPort} on ${rule.securityGroupId}`)
      assert.ok(rule.referencedSecurityGroupId, `port ${rule.fromPort} comes from a security group`)
    }
  })

  test('brokers accept MQTT from the NLB group only, cluster ports from brokers only, SSH from the bastion only', () => {
    const brokerRules = ingress
      .filter((r) => r.securityGroupId === sg.broker)
      .map((r) => `${r.fromPort}<-${r.referencedSecurityGroupId}`)
      .sort()
    const wanted = [`1883<-${sg.nlb}`, `18083<-${sg.broker}`, `22<-${sg.bastion}`]
    if (expected.wss) wanted.push(`8083<-${sg.nlb}`)
    if (expected.redis === 'colocated') wanted.push(`6379<-${sg.broker}`, `26379<-${sg.broker}`)
    assert.deepEqual(brokerRules, wanted.sort())
    const nlbOut = egress.filter((r) => r.securityGroupId === sg.nlb).map((r) => `${r.fromPort}->${r.referencedSecurityGroupId ?? r.cidrIpv4}`)
    assert.deepEqual(nlbOut.sort(), [`1883->${sg.broker}`, ...(expected.wss ? [`8083->${sg.broker}`] : [])].sort())
    const bastionOut = egress.filter((r) => r.securityGroupId === sg.bastion).map((r) => `${r.fromPort}->${r.referencedSecurityGroupId ?? r.cidrIpv4}`)
    assert.deepEqual(bastionOut, [`22->${sg.broker}`])
    const brokerToWorld = egress.filter((r) => r.securityGroupId === sg.broker && r.cidrIpv4 !== undefined).map((r) => `${r.fromPort}->${r.cidrIpv4}`)
    assert.deepEqual(brokerToWorld.sort(), ['443->0.0.0.0/0', '80->0.0.0.0/0'])
  })

  test(`${expected.nodeCount} broker VMs spread over the private subnets, no public address`, () => {
    assert.equal(brokers.length, expected.nodeCount)
    const privateIds = privateSubnets.map(idOf)
    brokers.forEach((node, i) => {
      assert.equal(node.inputs.subnetId, privateIds[i % privateIds.length], node.name)
      assert.equal(node.inputs.associatePublicIpAddress, false)
      assert.deepEqual(node.inputs.vpcSecurityGroupIds, [sg.broker])
      assert.ok(node.inputs.iamInstanceProfile, 'instance profile')
    })
    assert.ok(bastion, 'a bastion')
    assert.equal(bastion.inputs.subnetId, idOf(publicSubnets[0]))
    assert.equal(bastion.inputs.associatePublicIpAddress, true)
    assert.deepEqual(bastion.inputs.vpcSecurityGroupIds, [sg.bastion])
    assert.equal(bastion.inputs.iamInstanceProfile, undefined, 'the bastion needs no AWS API')
  })

  test('every VM: IMDSv2 required (hop limit 1), encrypted gp3 root, key pair, no host key in user-data: pinned from its console', () => {
    for (const vm of instances) {
      assert.equal(vm.inputs.metadataOptions.httpTokens, 'required', vm.name)
      assert.equal(vm.inputs.metadataOptions.httpEndpoint, 'enabled', vm.name)
      assert.equal(vm.inputs.metadataOptions.httpPutResponseHopLimit, 1, vm.name)
      assert.equal(vm.inputs.rootBlockDevice.encrypted, true, vm.name)
      assert.equal(vm.inputs.rootBlockDevice.volumeType, 'gp3', vm.name)
      assert.equal(vm.inputs.keyName, 'fleetmq-ssh-key')
      const userData = plain(vm.inputs.userData) as string
      assert.match(userData, /^#cloud-config\n/)
      // Any local user reads user-data from IMDS: no private key may be in it.
      assert.doesNotMatch(userData, /PRIVATE KEY|ssh_keys/, vm.name)
      assert.match(userData, /^ssh_pwauth: false$/m)
      const reader = named(run, `${vm.name}-host-key`)
      assert.equal(reader.type, 'command:local:Command')
      assert.match(reader.inputs.create, new RegExp(`aws ec2 get-console-output --region eu-west-1 --instance-id ${vm.name}-id --latest`))
      assert.deepEqual(reader.inputs.triggers, [`${vm.name}-id`], 'a replaced VM has its keys read again')
      assert.deepEqual(vm.ignoreChanges, ['ami'], 'a newer Debian AMI does not replace running VMs')
    }
  })

  test('broker user-data tells the FleetMQ image\'s first boot that Pulumi provisions the node; the bastion\'s does not', () => {
    // Without it, a node from an AMI built by images/aws ran first boot (its own secrets, a
    // standalone cluster) and Pulumi's phases on top.
    for (const vm of brokers) assert.match(plain(vm.inputs.userData) as string, /^fleetmq:\n {2}provisioning: external$/m, vm.name)
    assert.doesNotMatch(plain(bastion?.inputs.userData) as string, /fleetmq:/)
  })

  test('instance profile: the SSM agent policy, nothing else (no CloudWatch agent runs)', () => {
    const role = ofType(run, 'aws:iam/role:Role')
    assert.equal(role.length, 1)
    assert.deepEqual(JSON.parse(role[0].inputs.assumeRolePolicy).Statement, [
      { Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' },
    ])
    assert.deepEqual(ofType(run, 'aws:iam/rolePolicyAttachment:RolePolicyAttachment').map((a) => a.inputs.policyArn).sort(), [
      'arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore',
    ])
    assert.equal(ofType(run, 'aws:iam/rolePolicy:RolePolicy').length, 0)
  })

  test('NLB: internet-facing, its security group attached at creation, cross-zone, an Elastic IP in each public subnet', () => {
    const [nlb] = ofType(run, 'aws:lb/loadBalancer:LoadBalancer')
    assert.equal(ofType(run, 'aws:lb/loadBalancer:LoadBalancer').length, 1)
    assert.equal(nlb.inputs.loadBalancerType, 'network')
    assert.equal(nlb.inputs.internal, false)
    assert.deepEqual(nlb.inputs.securityGroups, [sg.nlb])
    assert.equal(nlb.inputs.enableCrossZoneLoadBalancing, true)
    assert.equal(nlb.inputs.subnets, undefined, 'subnetMappings, so that each subnet gets its Elastic IP')
    const addresses = ofType(run, 'aws:ec2/eip:Eip').filter((e) => e.name.startsWith('fleetmq-ip-'))
    assert.equal(addresses.length, publicSubnets.length)
    assert.deepEqual(
      nlb.inputs.subnetMappings.map((m: any) => m.subnetId),
      publicSubnets.map(idOf),
    )
    const allocations = nlb.inputs.subnetMappings.map((m: any) => m.allocationId)
    assert.equal(new Set(allocations).size, publicSubnets.length, 'a distinct Elastic IP per subnet')
    for (const address of addresses) assert.equal(address.inputs.domain, 'vpc')
    // Devices are configured with these: `pulumi destroy` must not release them unasked.
    for (const address of addresses) assert.equal(address.protect, true, `${address.name} is protected`)
  })

  test("the VPC's default security group is taken over with no rules", () => {
    const [group] = ofType(run, 'aws:ec2/defaultSecurityGroup:DefaultSecurityGroup')
    assert.ok(group, 'a DefaultSecurityGroup resource')
    assert.equal(group.inputs.vpcId, idOf(ofType(run, 'aws:ec2/vpc:Vpc')[0]))
    assert.equal(group.inputs.ingress, undefined)
    assert.equal(group.inputs.egress, undefined)
  })

  test(`TLS listener(s) with ${TLS_POLICY}, forwarding to TCP target groups with PROXY v2 and passing health checks`, () => {
    const listeners = ofType(run, 'aws:lb/listener:Listener')
    const targetGroups = ofType(run, 'aws:lb/targetGroup:TargetGroup')
    const wanted = expected.wss ? [[8883, 1883], [443, 8083]] : [[8883, 1883]]
    assert.equal(listeners.length, wanted.length)
    assert.equal(TLS_POLICY, 'ELBSecurityPolicy-TLS13-1-2-2021-06')
    for (const [listenPort, targetPort] of wanted) {
      const listener = listeners.find((l) => l.inputs.port === listenPort)
      assert.ok(listener, `listener on ${listenPort}`)
      assert.equal(listener.inputs.protocol, 'TLS')
      assert.equal(listener.inputs.sslPolicy, TLS_POLICY)
      assert.match(listener.inputs.certificateArn, /^arn:aws:acm:/)
      const group = targetGroups.find((g) => g.inputs.port === targetPort)
      assert.ok(group, `target group on ${targetPort}`)
      assert.deepEqual(listener.inputs.defaultActions, [{ type: 'forward', targetGroupArn: `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/${group.name}/1` }])
      assert.equal(group.inputs.protocol, 'TCP')
      assert.equal(group.inputs.targetType, 'instance')
      assert.equal(group.inputs.proxyProtocolV2, true)
      // TCP on the traffic port: the NLB opens it with a PROXY v2 LOCAL header, which the broker's
      // `proxyProtocol: required` listener accepts.
      assert.equal(group.inputs.healthCheck.protocol, 'TCP')
      assert.equal(group.inputs.healthCheck.port, 'traffic-port')
      const attachments = ofType(run, 'aws:lb/targetGroupAttachment:TargetGroupAttachment').filter((a) => a.inputs.targetGroupArn.includes(`/${group.name}/`))
      assert.deepEqual(attachments.map((a) => a.inputs.targetId), brokers.map(idOf))
      for (const attachment of attachments) assert.equal(attachment.inputs.port, targetPort)
    }
  })

  test('remote commands go through the bastion and pin both host keys', () => {
    assert.ok(commands.length > 0 && copies.length > 0)
    const bastionIp = run.outputs.bastionAddress
    const hostKeyOf = (vmName: string): string => `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5${Buffer.from(`${vmName}-host-key`).toString('base64')}`
    for (const remote of [...commands, ...copies]) {
      assert.ok(isSecretInput(remote.inputs.connection), `${remote.name}: the connection holds the private key`)
      const connection = plain(remote.inputs.connection)
      const node = brokers.find((b) => remote.name.includes(`-${b.name}-`))
      assert.ok(node, `${remote.name} targets a broker`)
      assert.equal(connection.hostKey, hostKeyOf(node.name), `${remote.name} pins the node's host key`)
      assert.equal(connection.user, 'admin')
      assert.match(connection.privateKey, /OPENSSH PRIVATE KEY/)
      assert.equal(connection.proxy.host, bastionIp)
      assert.equal(connection.proxy.hostKey, hostKeyOf('fleetmq-bastion'), `${remote.name} pins the bastion's host key`)
    }
  })

  test('uploads: scripts/provision/ whole and the exact bundle file, re-sent when their content hash changes', async () => {
    const provisionDir = run.fixture.provisionDir
    const bundle = run.fixture.bundlePath
    assert.ok(listFiles(provisionDir).includes(PROVISION_ENTRY_POINT), `${provisionDir} holds ${PROVISION_ENTRY_POINT}`)
    for (const node of brokers) {
      const scripts = copies.find((c) => c.name === `fleetmq-provision-${node.name}-provision`)
      const bundleCopy = copies.find((c) => c.name === `fleetmq-provision-${node.name}-bundle`)
      assert.ok(scripts && bundleCopy, node.name)
      assert.equal(await scripts.inputs.source.path, provisionDir)
      assert.equal(scripts.inputs.remotePath, STAGE, 'the folder lands as <stage>/provision')
      assert.deepEqual(scripts.inputs.triggers, [hashDirectory(provisionDir)])
      assert.equal(await bundleCopy.inputs.source.path, bundle)
      assert.equal(bundleCopy.inputs.remotePath, `${STAGE}/${basename(bundle)}`)
      assert.deepEqual(bundleCopy.inputs.triggers, [hashFile(bundle)])
    }
  })

  test('phases run the entry point of scripts/provision with node.env and the bundle, in order, node 1 first', () => {
    const files = listFiles(run.fixture.provisionDir)
    const bundleName = basename(run.fixture.bundlePath)
    const phase = (name: string): string =>
      `sudo bash ${STAGE}/provision/${PROVISION_ENTRY_POINT} ${name} --env ${STAGE}/node.env --bundle ${STAGE}/${bundleName}`
    for (const node of brokers) {
      const step = (s: string): RecordedResource | undefined => commands.find((c) => c.name === `fleetmq-provision-${node.name}-${s}`)
      const install = step('install')
      const configure = step('configure')
      assert.ok(install && configure, node.name)
      for (const [command, name] of [[install, 'install'], [configure, 'configure']] as const) {
        assert.equal(command.inputs.create, phase(name))
        assert.equal(command.inputs.update, phase(name))
        const referenced = (/\/provision\/(\S+)/.exec(command.inputs.create) ?? [])[1]
        assert.ok(files.includes(referenced), `${referenced} exists in ${run.fixture.provisionDir}`)
        assert.ok(command.inputs.triggers.includes(hashDirectory(run.fixture.provisionDir)), 'a changed script re-runs the phase')
        assert.ok(command.inputs.triggers.includes(hashFile(run.fixture.bundlePath)), 'a changed bundle re-runs the phase')
      }
      assert.ok(install.dependsOn.includes(`fleetmq-provision-${node.name}-provision`))
      assert.ok(install.dependsOn.includes(`fleetmq-provision-${node.name}-bundle`))
      assert.ok(install.dependsOn.includes(`fleetmq-provision-${node.name}-node-env`))
      assert.deepEqual(configure.dependsOn, [`fleetmq-provision-${node.name}-install`])
      const join = step('join')
      if (node.name === 'fleetmq-node-1') {
        assert.equal(join, undefined, 'node 1 starts the cluster')
        continue
      }
      assert.ok(join, `${node.name} joins`)
      assert.equal(join.inputs.create, phase('join'))
      assert.equal(join.inputs.update, phase('join'), 'a changed script re-runs join in place, never leave + join')
      assert.equal(join.inputs.delete, phase('leave'), 'removing the node runs leave before it is destroyed')
      assert.deepEqual(join.dependsOn.sort(), [`fleetmq-provision-${node.name}-configure`, 'fleetmq-provision-fleetmq-node-1-configure'].sort())
    }
  })

  test('a new bundle moves running nodes onto it with upgrade, one node at a time, node 1 first', () => {
    const bundleName = basename(run.fixture.bundlePath)
    const upgrade = `sudo bash ${STAGE}/provision/${PROVISION_ENTRY_POINT} upgrade --env ${STAGE}/node.env --bundle ${STAGE}/${bundleName}`
    brokers.forEach((node, i) => {
      const step = (s: string): RecordedResource | undefined => commands.find((c) => c.name === `fleetmq-provision-${node.name}-${s}`)
      const command = step('upgrade')
      assert.ok(command, `${node.name} has an upgrade step`)
      assert.equal(command.inputs.create, upgrade, 'on a node already on this bundle (a fresh one) upgrade does nothing')
      assert.equal(command.inputs.update, upgrade, 'a changed bundle runs upgrade in place')
      assert.equal(command.inputs.delete, undefined)
      assert.deepEqual(command.inputs.triggers, [hashFile(run.fixture.bundlePath)], 'only a changed bundle restarts a node')
      // After the node is in the cluster, and after the previous node is back on the new release.
      const inCluster = `fleetmq-provision-${node.name}-${i === 0 ? 'configure' : 'join'}`
      const expected = i === 0 ? [inCluster] : [inCluster, `fleetmq-provision-${brokers[i - 1].name}-upgrade`]
      assert.deepEqual(command.dependsOn.sort(), expected.sort())
    })
  })

  test('node.env: broker settings and provisioning keys, no secret; secrets go to their own files', () => {
    const secretValues = ['cluster-secret', 'admin-password', 'redis-password'].map((s) => `secret-of-fleetmq-${s}`)
    const seedIp = (run.outputs.nodePrivateAddresses as string[])[0]
    brokers.forEach((node, i) => {
      const envCommand = commands.find((c) => c.name === `fleetmq-provision-${node.name}-node-env`)
      assert.ok(envCommand)
      assert.equal(envCommand.inputs.create, `umask 077 && cat > ${STAGE}/node.env`)
      const text = envCommand.inputs.stdin as string
      for (const secret of secretValues) assert.ok(!text.includes(secret), 'no secret in node.env')
      const env = Object.fromEntries(
        text
          .split('\n')
          .filter((line) => line.startsWith('FLEETMQ_'))
          .map((line) => {
            const [, key, value] = /^([A-Z0-9_]+)='(.*)'$/.exec(line) ?? []
            return [key, value]
          }),
      )
      const settings = configFromEnv(env) as any
      assert.deepEqual(settings.listeners[0], { type: 'mqtt', port: 1883, proxyProtocol: 'required' })
      assert.equal(settings.listeners.length, expected.wss ? 2 : 1)
      assert.deepEqual(settings.mgmt, { enabled: true, host: '0.0.0.0', port: 18083 })
      assert.equal(settings.cluster.name, 'fleetmq-test')
      assert.equal(settings.cluster.secretFile, '/etc/fleetmq/secrets/cluster-secret')
      assert.equal(settings.cluster.redis === undefined, i > 0, 'node 1 carries the Redis backend, the others get it by joining')
      assert.equal(settings.provision.role, i === 0 ? 'seed' : 'join')
      assert.equal(settings.provision.seed, `${seedIp}:18083`)
      assert.equal(settings.provision.nodeName, node.name)
      assert.equal(settings.provision.advertiseAddress, (run.outputs.nodePrivateAddresses as string[])[i])
      // The host firewall says what the security groups say: management, Redis and Sentinel from
      // the brokers, the PROXY v2 listener from the NLB's (public) subnets.
      assert.deepEqual(settings.provision.peers, run.outputs.nodePrivateAddresses)
      assert.deepEqual(settings.provision.plaintextFrom, ofType(run, 'aws:ec2/subnet:Subnet').filter((s) => s.inputs.tags?.Tier === 'public').map((s) => s.inputs.cidrBlock))
      const redisRole = expected.redis === 'elasticache' ? 'external' : i === 0 ? 'primary' : 'replica'
      assert.equal(settings.provision.redisRole, redisRole)

      for (const [file, value] of [['cluster-secret', secretValues[0]], ['admin-password', secretValues[1]], ['redis-password', secretValues[2]]]) {
        const write = commands.find((c) => c.name === `fleetmq-provision-${node.name}-${file}`)
        assert.ok(write, `${node.name} gets ${file}`)
        assert.equal(write.inputs.create, `umask 077 && cat > ${STAGE}/secrets/${file}`)
        assert.ok(isSecretInput(write.inputs.stdin), `${file} stays a Pulumi secret`)
        assert.equal(plain(write.inputs.stdin), value)
        assert.equal(write.inputs.logging, 'none')
      }
    })
  })

  test('outputs: endpoint, Elastic IPs, NLB name, bastion, node addresses, CA, secrets kept secret, management command', () => {
    const host = expected.endpointHost ?? run.outputs.loadBalancerDnsName
    assert.equal(run.outputs.endpoint, `mqtts://${host}:8883`)
    const addresses = ofType(run, 'aws:ec2/eip:Eip').filter((e) => e.name.startsWith('fleetmq-ip-'))
    assert.deepEqual(run.outputs.elasticIps, addresses.map((e) => e.state.publicIp))
    assert.equal((run.outputs.elasticIps as string[]).length, expected.azCount)
    assert.match(String(run.outputs.loadBalancerDnsName), /\.elb\.eu-west-1\.amazonaws\.com$/)
    assert.equal((run.outputs.nodePrivateAddresses as string[]).length, expected.nodeCount)
    assert.ok(run.outputs.deviceCa)
    assert.deepEqual(Object.keys(run.outputs.adminCredentials as object).sort(), ['password', 'username'])
    for (const key of ['adminCredentials', 'sshPrivateKey']) assert.ok(run.secretOutputs.has(key), `${key} is a secret output`)
    const command = String(run.outputs.managementApiCommand)
    assert.ok(command.includes(`admin@${run.outputs.bastionAddress}`))
    assert.ok(command.includes(`-L 18083:127.0.0.1:18083 admin@${(run.outputs.nodePrivateAddresses as string[])[0]}`))
    assert.ok(command.includes('StrictHostKeyChecking=yes'))
    // The key file is created private: umask before the write, not a chmod after it.
    assert.match(command, /^\(umask 077 && rm -f fleetmq-ssh\.key && pulumi stack output --show-secrets sshPrivateKey > fleetmq-ssh\.key\) && /)
    const knownHosts = String(run.outputs.knownHosts).trim().split('\n')
    assert.equal(knownHosts.length, expected.nodeCount + 1)
  })
}
