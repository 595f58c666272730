import { Command } from 'commander'
import { readClusterSecret } from '../../cluster/secret.js'
import { ensureNodeCertificate } from '../../cluster/cluster-ca.js'
import type { NodeStatus } from '../../cluster/membership.js'
import type { MergeReport } from '../../auth/user-store.js'
import { FleetmqError } from '../../errors.js'
import { printData } from '../output.js'
import { loadConfig } from '../../config/load.js'
import type { Config } from '../../config/schema.js'
import { describeFailure, mgmtBaseUrl, mgmtRequest, nodeTlsFor, type NodeTls } from '../../mgmt/client.js'
import type { ConfigTree } from '../../config/env.js'
import { readLocalToken } from '../../mgmt/local-token.js'
import { signRequest } from '../../cluster/signed-request.js'

/*
 * `fleetmq cluster join|leave|status`: each talks to a node's management API (`--node`, default
 * the local node at 127.0.0.1:18083). On the node's own host the command reads the node's
 * management token (`<dataDir>/mgmt.token`, the dataDir resolved as `start` resolves it: --config,
 * FLEETMQ_*, --data-dir); a remote node takes the cluster secret (`--cluster-secret-file`).
 *
 * join: the local node fetches the descriptor from the seed with the secret, stores it in its
 * dataDir and restarts into the cluster; this command then waits until the node is back and a
 * member. Repeating it is a no-op; a bad secret, an unreachable seed or another cluster are errors
 * and change nothing.
 */

const DEFAULT_NODE = '127.0.0.1:18083'
const CLUSTER_API = '/api/v1/cluster'

interface NodeOptions {
  node: string
  clusterSecretFile?: string
  caFile?: string
  config?: string
  dataDir?: string
  json?: boolean
}

interface Answer {
  status: number
  body: Record<string, unknown>
}

/**
 * A request to a node's management API (`node`: HOST:PORT or a URL): signed with the cluster
 * secret (`secret`, which never crosses the network) or carrying the local node's management token
 * (`token`, Bearer).
 */
export async function callNode(node: string, method: 'GET' | 'POST', path: string, options: { secret?: string; token?: string; body?: unknown; timeoutMs?: number; tls?: NodeTls } = {}): Promise<Answer> {
  const url = `${mgmtBaseUrl(node, options.tls?.tls ?? false)}${path}`
  const body = options.body !== undefined ? JSON.stringify(options.body) : undefined
  const authorization = options.secret !== undefined
    ? signRequest(options.secret, method, path, body ?? '').authorization
    : options.token !== undefined ? `Bearer ${options.token}` : undefined
  try {
    return await mgmtRequest(url, {
      method,
      headers: {
        ...(authorization ? { authorization } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body,
      ca: options.tls?.ca,
      timeoutMs: options.timeoutMs ?? 15_000,
    })
  } catch (err) {
    throw new FleetmqError('MGMT_REQUEST', `cannot reach the node's management API at ${url} (${describeFailure(err)}); is fleetmq running there? give its address with --node HOST:PORT`)
  }
}

function failIfError(answer: Answer): void {
  if (answer.status >= 400) {
    throw new FleetmqError('CLUSTER', typeof answer.body.error === 'string' ? answer.body.error : `the node answered ${answer.status}`)
  }
}

const secretOf = (options: NodeOptions): string | undefined => (options.clusterSecretFile ? readClusterSecret(options.clusterSecretFile) : undefined)

/** The local node's config, as `start` resolves it (without what `cluster join` stored). */
function localConfig(options: Pick<NodeOptions, 'config' | 'dataDir'>, env: NodeJS.ProcessEnv = process.env): Config {
  const flags: ConfigTree = options.dataDir ? { dataDir: options.dataDir } : {}
  return loadConfig({ file: options.config ?? env.FLEETMQ_CONFIG, env, flags })
}

/** The data folder of the local node, as `start` resolves it. */
export function localDataDir(options: Pick<NodeOptions, 'config' | 'dataDir'>, env: NodeJS.ProcessEnv = process.env): string {
  return localConfig(options, env).dataDir
}

/** https or http to the node (see nodeTlsFor). */
export function nodeTls(options: Pick<NodeOptions, 'config' | 'dataDir' | 'caFile'>, env: NodeJS.ProcessEnv = process.env): NodeTls {
  return nodeTlsFor(localConfig(options, env), options.caFile)
}

/** What a command authenticates with: the cluster secret when given, else the local node's token. */
const credentialOf = (options: NodeOptions): { secret?: string; token?: string } => {
  const secret = secretOf(options)
  return secret !== undefined ? { secret } : { token: readLocalToken(localDataDir(options)) }
}

/** --config and --data-dir: where the local node's management token is. */
function withLocalNode(command: Command): Command {
  return command
    .option('-c, --config <file>', 'config file of the local node, to find its management token and mgmt.tls (FLEETMQ_CONFIG)')
    .option('--data-dir <dir>', 'data folder of the local node, holding its management token mgmt.token (default /var/lib/fleetmq)')
    .option('--ca-file <file>', 'CA certificate to verify the node\'s https management API with (default: the local config\'s mgmt.tls.ca)')
}

/** Waits until the node answers /readyz and is a member of `cluster` (after a restart). */
async function waitForMember(node: string, cluster: string, secret: string, tls: NodeTls, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer yet'
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    try {
      const status = await callNode(node, 'GET', `${CLUSTER_API}/status`, { secret, tls, timeoutMs: 2_000 })
      if (status.status === 200 && status.body.cluster === cluster && (status.body.backend as { ready?: boolean } | undefined)?.ready) return status.body
      last = status.status === 200 ? `cluster ${String(status.body.cluster)}, backend ready: ${String((status.body.backend as { ready?: boolean } | undefined)?.ready)}` : `HTTP ${status.status}`
    } catch (err) {
      last = (err as Error).message
    }
  }
  throw new FleetmqError('CLUSTER', `the node stored the cluster descriptor but did not come back as a member of "${cluster}" within ${timeoutMs / 1000} s (${last}); check its logs`)
}

function formatUptime(seconds: number): string {
  if (seconds < 60) return `${seconds}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`
  return `${Math.floor(seconds / 86_400)}d${Math.floor((seconds % 86_400) / 3600)}h`
}

/** The status table: one row per node. */
export function renderStatus(body: { cluster: string | null; nodes: NodeStatus[]; error?: string }): string {
  const header = ['NODE', 'HEALTH', 'CONNS', 'MSG IN/S', 'MSG OUT/S', 'VERSION', 'UPTIME', 'MGMT', 'MQTT']
  const rows = body.nodes.map((n) => [
    `${n.id}${n.self ? ' *' : ''}`,
    n.health === 'down' ? `down (${Math.round(n.lastSeenAgo)}s)` : n.health,
    String(n.connections),
    String(n.msgInRate),
    String(n.msgOutRate),
    n.version,
    n.health === 'up' ? formatUptime(n.uptime) : '-',
    n.mgmt ?? '-',
    n.mqtt.join(','),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  const title = body.cluster ? `cluster "${body.cluster}": ${body.nodes.filter((n) => n.health === 'up').length}/${body.nodes.length} nodes up` : 'standalone node (no cluster)'
  return [title, ...(body.error ? [`warning: ${body.error}`] : []), line(header), ...rows.map(line)].join('\n')
}

/** What became of the node's users.json: merged into the cluster's store, conflicts named. */
export function renderMerge(merge: MergeReport): string[] {
  return [
    `users of ${merge.file}: ${merge.added} added to the cluster, ${merge.unchanged} already there, ${merge.conflicts.length} in conflict; the file is now ${merge.movedTo}`,
    ...merge.conflicts.map((name) => `  conflict: user "${name}" has another password in the cluster; the cluster's is kept (fleetmq user passwd ${name} sets it)`),
  ]
}

const joinCommand = withLocalNode(new Command('join'))
  .description('bring the local node into the cluster the seed belongs to (harmless to repeat)')
  .argument('<seed>', 'management API of a cluster member, HOST[:PORT] (default port 18083)')
  .option('--node <host:port>', 'management API of the node to join, HOST:PORT or https://HOST:PORT', DEFAULT_NODE)
  .requiredOption('--cluster-secret-file <file>', 'file holding the cluster secret')
  .option('--timeout <seconds>', 'how long to wait for the node to come back as a member', '30')
  .option('--json', 'print the result as JSON')
  .action(async (seed: string, options: NodeOptions & { timeout: string }) => {
    const secret = secretOf(options) as string
    // A standalone node has no cluster secret (or another one): the local node takes its token.
    const token = readLocalToken(localDataDir(options))
    const tls = nodeTls(options)
    const answer = await callNode(options.node, 'POST', `${CLUSTER_API}/join`, { ...(token !== undefined ? { token } : { secret }), body: { seed, secret }, tls })
    failIfError(answer)
    const cluster = String(answer.body.cluster)
    if (answer.body.changed === false) {
      printData(options, { joined: true, changed: false, cluster, message: answer.body.message }, () => `${String(answer.body.message)}; nothing to do`)
      return
    }
    const status = await waitForMember(options.node, cluster, secret, tls, Number(options.timeout) * 1000)
    const nodes = status.nodes as NodeStatus[]
    const merge = status.usersMerge as MergeReport | undefined
    printData(options, { joined: true, changed: true, cluster, node: status.node, nodes: nodes.length, ...(merge ? { usersMerge: merge } : {}) }, () => [
      `joined cluster "${cluster}" as ${String(status.node)} (${nodes.filter((n) => n.health === 'up').length} nodes up)`,
      ...(merge ? renderMerge(merge) : []),
    ].join('\n'))
  })

const leaveCommand = withLocalNode(new Command('leave'))
  .description('drain the node (5.0 clients are told to use another server, others are closed), leave the cluster and stop it; sessions stay in Redis')
  .option('--node <host:port>', 'management API of the node that leaves', DEFAULT_NODE)
  .option('--cluster-secret-file <file>', 'cluster secret, for a node on another host')
  .option('--json', 'print the result as JSON')
  .action(async (options: NodeOptions) => {
    const answer = await callNode(options.node, 'POST', `${CLUSTER_API}/leave`, { ...credentialOf(options), tls: nodeTls(options) })
    failIfError(answer)
    const b = answer.body
    printData(options, b, () => `node ${String(b.node)} left cluster "${String(b.cluster)}": ${String(b.redirected)} MQTT 5.0 clients redirected (reason 0x${Number(b.reasonCode).toString(16)}), ${String(b.closed)} MQTT 3.x clients closed; the node is stopping`)
  })

const statusCommand = withLocalNode(new Command('status'))
  .description('every node of the cluster with its health, connections and message rates')
  .option('--node <host:port>', 'management API of any node', DEFAULT_NODE)
  .option('--cluster-secret-file <file>', 'cluster secret, for a node on another host')
  .option('--json', 'print the status as JSON')
  .action(async (options: NodeOptions) => {
    const answer = await callNode(options.node, 'GET', `${CLUSTER_API}/status`, { ...credentialOf(options), tls: nodeTls(options) })
    failIfError(answer)
    printData(options, answer.body, () => renderStatus(answer.body as unknown as Parameters<typeof renderStatus>[0]))
  })

const certificateCommand = new Command('certificate')
  .description('make this node\'s key and a certificate signed by the cluster CA (derived from the cluster secret), for Redis TLS and the management API; keeps a certificate that still fits')
  .requiredOption('--cluster-secret-file <file>', 'file holding the cluster secret')
  .requiredOption('--dir <dir>', 'folder for ca.pem, node.pem and node-key.pem (the key never leaves it)')
  .requiredOption('--name <name>', 'the node\'s name (the certificate\'s CN)')
  .option('--address <address>', 'an IP address or DNS name peers reach the node by (repeat it)', (value: string, list: string[]) => [...list, value], [] as string[])
  .option('--json', 'print the result as JSON')
  .action((options: { clusterSecretFile: string; dir: string; name: string; address: string[]; json?: boolean }) => {
    const files = ensureNodeCertificate({ secret: readClusterSecret(options.clusterSecretFile), dir: options.dir, name: options.name, names: options.address })
    printData(options, files, () => `${files.changed ? 'issued' : 'kept'} ${files.cert} for ${options.address.join(', ')} (CA ${files.ca}, key ${files.key})`)
  })

export const clusterCommand = new Command('cluster')
  .description('join, leave and inspect a FleetMQ cluster')
  .addCommand(joinCommand)
  .addCommand(leaveCommand)
  .addCommand(statusCommand)
  .addCommand(certificateCommand)
