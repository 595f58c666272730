import * as command from '@pulumi/command'
import * as pulumi from '@pulumi/pulumi'
import type { BrokerNode } from './broker-nodes.js'
import { hashDirectory, hashFile, hashText } from './content-hash.js'
import { NODE_ENV_PATH, SECRET_FILES, SECRETS_DIR, STAGE_DIR, phaseCommand, renderNodeEnv, type NodeRedis } from './node-env.js'

export interface ProvisioningArgs {
  /** The cluster's name: nodes refuse to join a cluster of another name. */
  clusterName: string
  nodes: readonly BrokerNode[]
  bastion: { host: pulumi.Input<string>; hostPublicKey: pulumi.Input<string> }
  sshUser: string
  sshPrivateKey: pulumi.Input<string>
  /** The broker bundle (`npm run bundle`) and the `scripts/provision` folder, both uploaded to every node. */
  bundlePath: string
  bundleFileName: string
  provisionDir: string
  redis: { kind: 'colocated' } | { kind: 'elasticache'; host: pulumi.Input<string>; port: number }
  wss: boolean
  /**
   * Where the NLB connects from (its subnets): each node's host firewall admits the plaintext
   * MQTT/WebSocket listeners (PROXY v2) from these only, as the brokers' security group does.
   */
  loadBalancerCidrs: readonly string[]
  secrets: { clusterSecret: pulumi.Input<string>; adminPassword: pulumi.Input<string>; redisPassword: pulumi.Input<string> }
}

/** Waits for first boot (host key, users) to finish, then makes the staging folders, private to the SSH user. */
export const PREPARE_STAGE_COMMAND =
  `if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null || true; fi; ` +
  `install -d -m 700 ${STAGE_DIR} ${SECRETS_DIR}`

/** Writes stdin to `path`, readable by its owner only. */
export function writeFileCommand(path: string): string {
  return `umask 077 && cat > ${path}`
}

/**
 * Provisions the broker nodes over SSH through the bastion, every connection pinned to the host
 * keys Pulumi generated. Per node: the staging folder, uploads of `scripts/provision/` and the
 * bundle, node.env and the secret files, then the phases `install` and `configure`; node 1 starts
 * the cluster, every other node runs `join` once node 1 is configured, and `leave` before it is
 * destroyed. Triggers carry the content hashes, so a changed script, bundle or setting re-runs
 * the phases (each phase is idempotent).
 *
 * `install` never moves a running node to a new bundle; `upgrade` does, one node at a time: each
 * node's upgrade command depends on the previous node's, so a new bundle restarts node 1, waits
 * for it to be ready again, then node 2, and so on. Its only trigger is the bundle hash (a changed
 * setting or script never restarts a node through it), and on a node that already runs the bundle
 * (a fresh node, installed from it) the phase does nothing.
 */
export class Provisioning extends pulumi.ComponentResource {
  constructor(name: string, args: ProvisioningArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:Provisioning', name, {}, opts)
    if (args.nodes.length === 0) throw new Error('nodes: nothing to provision')
    const provisionHash = hashDirectory(args.provisionDir)
    const bundleHash = hashFile(args.bundlePath)
    const secretsHash = pulumi
      .all([args.secrets.clusterSecret, args.secrets.adminPassword, args.secrets.redisPassword])
      .apply((values) => hashText(...values))
    const redis: pulumi.Output<NodeRedis> =
      args.redis.kind === 'elasticache'
        ? pulumi.all([args.redis.host, args.redis.port]).apply(([host, port]): NodeRedis => ({ kind: 'elasticache', host, port }))
        : pulumi.output<NodeRedis>({ kind: 'colocated' })
    const seed = args.nodes[0]
    const peers = pulumi.all(args.nodes.map((n) => n.privateIp))

    let seedConfigured: command.remote.Command | undefined
    let previousUpgrade: command.remote.Command | undefined
    for (const node of args.nodes) {
      const prefix = `${name}-${node.name}`
      const child = (extra: pulumi.Resource[] = []): pulumi.CustomResourceOptions => ({ parent: this, dependsOn: extra })
      const connection: command.types.input.remote.ConnectionArgs = {
        host: node.privateIp,
        user: args.sshUser,
        privateKey: args.sshPrivateKey,
        hostKey: node.hostPublicKey,
        // First boot of a fresh instance takes a minute or two before SSH answers.
        dialErrorLimit: 40,
        perDialTimeout: 20,
        proxy: {
          host: args.bastion.host,
          user: args.sshUser,
          privateKey: args.sshPrivateKey,
          hostKey: args.bastion.hostPublicKey,
          dialErrorLimit: 40,
          perDialTimeout: 20,
        },
      }
      const run = (step: string, create: string, extra: pulumi.Resource[], more: Partial<command.remote.CommandArgs> = {}): command.remote.Command =>
        new command.remote.Command(`${prefix}-${step}`, { connection, create, addPreviousOutputInEnv: false, ...more }, child(extra))

      const stage = run('stage', PREPARE_STAGE_COMMAND, [node.instance])
      const uploads: pulumi.Resource[] = [
        new command.remote.CopyToRemote(
          `${prefix}-provision`,
          // A folder without a trailing slash lands as <stage>/provision.
          { connection, source: new pulumi.asset.FileArchive(args.provisionDir), remotePath: STAGE_DIR, triggers: [provisionHash] },
          child([stage]),
        ),
        new command.remote.CopyToRemote(
          `${prefix}-bundle`,
          { connection, source: new pulumi.asset.FileAsset(args.bundlePath), remotePath: `${STAGE_DIR}/${args.bundleFileName}`, triggers: [bundleHash] },
          child([stage]),
        ),
      ]
      // Every node's host firewall admits management, Redis and Sentinel from the brokers only, as
      // the brokers' security group does: the cluster's members are its peers.
      const nodeEnv = pulumi.all([node.privateIp, seed.privateIp, redis, peers]).apply(([advertiseAddress, seedAddress, nodeRedis, peerAddresses]) =>
        renderNodeEnv({
          clusterName: args.clusterName, nodeNumber: node.index + 1, nodeName: node.name, advertiseAddress, seedAddress, redis: nodeRedis, wss: args.wss,
          peers: peerAddresses, plaintextFrom: args.loadBalancerCidrs,
        }),
      )
      uploads.push(run('node-env', writeFileCommand(NODE_ENV_PATH), [stage], { stdin: nodeEnv }))
      const secretFiles: Array<[string, string, pulumi.Input<string>]> = [
        ['cluster-secret', SECRET_FILES.clusterSecret, args.secrets.clusterSecret],
        ['admin-password', SECRET_FILES.adminPassword, args.secrets.adminPassword],
        ['redis-password', SECRET_FILES.redisPassword, args.secrets.redisPassword],
      ]
      for (const [step, path, value] of secretFiles) {
        uploads.push(run(step, writeFileCommand(path), [stage], { stdin: pulumi.secret(value), logging: 'none' }))
      }

      const triggers = [provisionHash, bundleHash, nodeEnv.apply((text) => hashText(text)), secretsHash]
      const phase = (phaseName: 'install' | 'configure', after: pulumi.Resource[]): command.remote.Command => {
        const script = phaseCommand(phaseName, args.bundleFileName)
        return run(phaseName, script, after, { update: script, triggers })
      }
      const install = phase('install', uploads)
      const configure = phase('configure', [install])
      let inCluster: command.remote.Command = configure
      if (seedConfigured === undefined) {
        // Node 1 starts the cluster; every other node joins it once it is configured.
        seedConfigured = configure
      } else {
        const join = phaseCommand('join', args.bundleFileName)
        inCluster = run('join', join, [configure, seedConfigured], { update: join, delete: phaseCommand('leave', args.bundleFileName), triggers })
      }
      const upgrade = phaseCommand('upgrade', args.bundleFileName)
      previousUpgrade = run('upgrade', upgrade, previousUpgrade ? [inCluster, previousUpgrade] : [inCluster], { update: upgrade, triggers: [bundleHash] })
    }
    this.registerOutputs({})
  }
}
