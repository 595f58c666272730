/*
 * What a broker node is told by provisioning: the staging layout, the phase commands, and the
 * node.env file. node.env holds the broker's own settings (validated here against the broker's
 * config schema, so a drift between infra and broker fails `pulumi preview`, not a VM) and the
 * provisioning keys under `provision`. Secrets never go into node.env: they are separate files.
 */
import { renderEnvFile, type ConfigTree } from '../broker/config/env.js'
import { validateConfig } from '../broker/config/load.js'
import { DEFAULTS } from '../broker/config/defaults.js'
import { NODE_ENV_PATH, phaseCommand, STAGE_DIR } from '../scripts/lib/phase-command.js'
import { PORTS } from './ports.js'

/** Where every upload lands on a node, and the command that runs a phase there (one copy, shared with scripts/join-node). */
export { NODE_ENV_PATH, phaseCommand, STAGE_DIR }
export const SECRETS_DIR = `${STAGE_DIR}/secrets`
/** The secret files provisioning reads, by the name of the value they hold. */
export const SECRET_FILES = Object.freeze({
  clusterSecret: `${SECRETS_DIR}/cluster-secret`,
  adminPassword: `${SECRETS_DIR}/admin-password`,
  redisPassword: `${SECRETS_DIR}/redis-password`,
})

/** Where the configure phase installs the staged secrets, readable by the broker only. */
export const INSTALLED_SECRETS_DIR = '/etc/fleetmq/secrets'
/** The Redis primary's name as the co-located Sentinels monitor it (scripts/provision/phases/configure.sh). */
export const SENTINEL_MASTER = 'fleetmq'

export type NodeRedis =
  /** Redis + Sentinel on the brokers: node 1 starts as primary, the others replicate from it. */
  | { kind: 'colocated' }
  /** A managed Redis (ElastiCache, TLS + AUTH). */
  | { kind: 'elasticache'; host: string; port: number }

export interface NodeEnvInput {
  /** A node refuses to join a cluster of another name. */
  clusterName: string
  /** 1-based position; node 1 is the seed. */
  nodeNumber: number
  nodeName: string
  /** This node's private address, which the others reach it on. */
  advertiseAddress: string
  /** Node 1's private address. */
  seedAddress: string
  redis: NodeRedis
  wss: boolean
  /**
   * The cluster's members (addresses or CIDRs): the node's host firewall admits the management API,
   * Redis and Sentinel from these only (the seed is added on a joining node).
   */
  peers: readonly string[]
  /**
   * Who may reach the plaintext MQTT and WebSocket listeners (PROXY v2 required): the load
   * balancer's subnets. The host firewall keeps them closed to every other address.
   */
  plaintextFrom: readonly string[]
}

/**
 * The broker settings of a node behind the NLB. Node 1 carries the cluster's Redis backend; the
 * others receive it from node 1 when they join (`fleetmq cluster join`).
 */
export function brokerSettings(input: NodeEnvInput): ConfigTree {
  const listeners: ConfigTree[] = [{ type: 'mqtt', port: PORTS.mqtt, proxyProtocol: 'required' }]
  if (input.wss) listeners.push({ type: 'ws', port: PORTS.ws, proxyProtocol: 'required', path: '/mqtt' })
  const cluster: ConfigTree = {
    name: input.clusterName,
    secretFile: `${INSTALLED_SECRETS_DIR}/cluster-secret`,
    nodeId: input.nodeName,
    advertiseMgmt: `${input.advertiseAddress}:${PORTS.mgmt}`,
  }
  if (input.nodeNumber === 1) {
    const passwordFile = `${INSTALLED_SECRETS_DIR}/redis-password`
    cluster.redis =
      input.redis.kind === 'elasticache'
        ? { url: `rediss://${input.redis.host}:${input.redis.port}`, passwordFile }
        : // Every node runs a Sentinel, so the local one is always there to ask for the primary.
          // The Sentinels take the Redis password too (requirepass in configure.sh).
          { sentinels: [`127.0.0.1:${PORTS.sentinel}`], name: SENTINEL_MASTER, passwordFile, sentinelPasswordFile: passwordFile }
  }
  return {
    listeners,
    // The NLB drops a connection idle for 350 s without telling either end: a 5.0 client asking for
    // no keep-alive (0) is given the longest one the broker accepts (300 s) [MQTT-3.2.2-21]. 3.1.1
    // clients asking for 0 are still accepted (limits.refuseKeepAliveZero would refuse them).
    limits: { serverKeepAlive: DEFAULTS.limits.maxKeepAlive },
    // On all interfaces: the security group admits only the other brokers (cluster join).
    mgmt: { enabled: true, host: '0.0.0.0', port: PORTS.mgmt },
    cluster,
    log: { format: 'json' },
  }
}

/** The provisioning keys: `FLEETMQ_PROVISION__*`. */
export function provisionSettings(input: NodeEnvInput): ConfigTree {
  const seed = input.nodeNumber === 1
  const settings: ConfigTree = {
    role: seed ? 'seed' : 'join',
    seed: `${input.seedAddress}:${PORTS.mgmt}`,
    nodeName: input.nodeName,
    advertiseAddress: input.advertiseAddress,
    peers: [...input.peers],
    plaintextFrom: [...input.plaintextFrom],
  }
  if (input.redis.kind === 'elasticache') {
    Object.assign(settings, { redisRole: 'external', redisHost: input.redis.host, redisPort: input.redis.port, redisTls: true })
  } else if (seed) {
    Object.assign(settings, { redisRole: 'primary' })
  } else {
    Object.assign(settings, { redisRole: 'replica', redisHost: input.seedAddress, redisPort: PORTS.redis, redisTls: true })
  }
  return settings
}

/** node.env of one node; throws when the broker's schema refuses the settings. */
export function renderNodeEnv(input: NodeEnvInput): string {
  if (!Number.isInteger(input.nodeNumber) || input.nodeNumber < 1) throw new Error(`nodeNumber: ${input.nodeNumber} must be 1 or more`)
  const broker = brokerSettings(input)
  const checked = validateConfig(broker)
  if (!checked.ok) {
    throw new Error(`the broker refuses the settings infra/node-env.ts gives it; bring the two back in line:\n${checked.errors.join('\n')}`)
  }
  return renderEnvFile({ ...broker, provision: provisionSettings(input) }, `FleetMQ node ${input.nodeName}: rendered by pulumi up (infra/node-env.ts)`)
}
