import type { Command } from 'commander'
import { FleetmqError } from '../errors.js'
import { describeFailure, mgmtBaseUrl, mgmtRequest, nodeTlsFor, type MgmtAnswer } from '../mgmt/client.js'
import { readLocalToken } from '../mgmt/local-token.js'
import { resolveConfig } from './user-store.js'

/*
 * How the commands that mirror the management API (`clients`, `publish`, `retained`, `ban`,
 * `apikey`) call it: `--node` (default the local node), authenticated with an API key
 * (`--api-key-file`, or FLEETMQ_API_KEY) or, on the node's own host, with its management token
 * read from its data folder (found as `fleetmq user` finds it: --config, --env-file, --data-dir).
 */

export const DEFAULT_NODE = '127.0.0.1:18083'

export interface ApiOptions {
  node: string
  config?: string
  dataDir?: string
  envFile?: string
  apiKeyFile?: string
  caFile?: string
  json?: boolean
}

/** --node, --config, --data-dir, --api-key-file and --json, for every API command. */
export function withApiOptions(command: Command): Command {
  return command
    .option('--node <host:port>', 'management API of any node of the cluster, HOST:PORT or https://HOST:PORT', DEFAULT_NODE)
    .option('-c, --config <file>', 'config file of the local node, to find its management token (FLEETMQ_CONFIG)')
    .option('--data-dir <dir>', 'data folder of the local node, holding its management token mgmt.token (default /var/lib/fleetmq)')
    .option('--env-file <file>', 'the local node\'s FLEETMQ_* environment file (provisioned hosts: /etc/fleetmq/fleetmq.env)')
    .option('--api-key-file <file>', 'a file holding an API key (fleetmq apikey add); FLEETMQ_API_KEY works too')
    .option('--ca-file <file>', 'CA certificate to verify the node\'s https management API with (default: mgmt.tls.ca, or the CA the local node left in its data folder)')
    .option('--json', 'print the result as JSON')
}

async function credential(options: ApiOptions, env: NodeJS.ProcessEnv, dataDir: string): Promise<string | undefined> {
  if (options.apiKeyFile) {
    const { readFileSync } = await import('node:fs')
    try {
      return readFileSync(options.apiKeyFile, 'utf8').trim()
    } catch (err) {
      throw new FleetmqError('FLAG_INVALID', `cannot read --api-key-file ${options.apiKeyFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
  }
  if (env.FLEETMQ_API_KEY) return env.FLEETMQ_API_KEY.trim()
  return readLocalToken(dataDir)
}

/** Calls `method path` on the node; resolves with the JSON answer, throws the API's error message. */
export async function callApi<T = Record<string, unknown>>(options: ApiOptions, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, env: NodeJS.ProcessEnv = process.env): Promise<T> {
  const config = resolveConfig({ config: options.config, dataDir: options.dataDir, envFile: options.envFile }, env)
  const token = await credential(options, env, config.dataDir)
  // https when the node's API speaks TLS (mgmt.tls), verified against the cluster CA.
  const tls = nodeTlsFor(config, options.caFile)
  const url = `${mgmtBaseUrl(options.node, tls.tls)}${path}`
  let res: MgmtAnswer
  try {
    res = await mgmtRequest(url, {
      method,
      headers: {
        ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      ca: tls.ca,
      timeoutMs: 15_000,
    })
  } catch (err) {
    throw new FleetmqError('MGMT_REQUEST', `cannot reach the node's management API at ${url} (${describeFailure(err)}); is fleetmq running there? give its address with --node HOST:PORT`)
  }
  if (res.status === 204) return {} as T
  const answer = res.body
  if (res.status < 200 || res.status >= 300) {
    const message = typeof answer.message === 'string' ? answer.message : typeof answer.error === 'string' ? answer.error : `the node answered ${res.status}`
    const hint = res.status === 401 && token === undefined ? ' (no management token found: run on the node\'s host with its --data-dir, or give --api-key-file)' : ''
    throw new FleetmqError('MGMT_REQUEST', `${message}${hint}`)
  }
  return answer as T
}

/** Query string of the options that were given. */
export function queryOf(values: Record<string, string | number | undefined>): string {
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(values)) if (value !== undefined) params.set(key, String(value))
  const text = params.toString()
  return text ? `?${text}` : ''
}

/** A text table: a header and rows, columns padded. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

export interface Paged<T> {
  readonly data: T[]
  readonly meta: { page: number; limit: number; count: number; hasNext: boolean; incomplete?: boolean }
}

/** The line under a listed page: which items of how many, and how to get the next. */
export function pageNote(meta: Paged<unknown>['meta'], shown: number): string {
  const first = (meta.page - 1) * meta.limit + 1
  const range = shown === 0 ? `none of ${meta.count}` : `${first}-${first + shown - 1} of ${meta.count}`
  return `${range}${meta.hasNext ? ` (next: --page ${meta.page + 1})` : ''}${meta.incomplete ? '; a node did not answer in time, its items are missing' : ''}`
}
