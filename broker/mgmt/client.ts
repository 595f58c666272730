import http from 'node:http'
import https from 'node:https'
import { readFileSync } from 'node:fs'
import type { Config } from '../config/schema.js'
import { FleetmqError } from '../errors.js'
import { readLocalCa } from './local-token.js'

/*
 * The client side of the management API, for node-to-node calls (a joining node fetching the
 * descriptor from its seed) and the CLI. `https://` URLs verify the node's certificate against
 * `ca` (the cluster CA, `mgmt.tls.ca`) and its name against the host in the URL; node:http rather
 * than fetch, whose agent takes no CA of its own.
 */

/** Default management port (DEFAULT_PORTS.mgmt). */
export const MGMT_PORT = 18083

export interface MgmtRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  readonly headers?: Record<string, string>
  readonly body?: string
  /** PEM CA for https:// (default: the system's CAs). */
  readonly ca?: string | Buffer
  readonly timeoutMs: number
}

export interface MgmtAnswer {
  readonly status: number
  readonly body: Record<string, unknown>
}

/**
 * `HOST[:PORT]` or a URL of a node's management API, as a base URL without a trailing slash:
 * the scheme is the URL's, else https when `tls` (this node's own API speaks TLS, so its
 * cluster's do), else http.
 */
export function mgmtBaseUrl(node: string, tls: boolean): string {
  if (/^https?:\/\//.test(node)) return node.replace(/\/+$/, '')
  const withPort = /:\d+$/.test(node) ? node : `${node}:${MGMT_PORT}`
  return `${tls ? 'https' : 'http'}://${withPort}`
}

/** Reads a PEM CA file named by `key` (a config key or an option), with an error naming both. */
export function readCaFile(file: string, key: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new FleetmqError('TLS_MATERIAL', `cannot read ${key} ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give the cluster CA certificate (PEM) the nodes' management certificates are signed with`)
  }
}

/** One request; rejects with the transport error (its `code`: ECONNREFUSED, a TLS verification code…). */
export function mgmtRequest(url: string, request: MgmtRequest): Promise<MgmtAnswer> {
  const target = new URL(url)
  const secure = target.protocol === 'https:'
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      method: request.method,
      headers: { ...request.headers, ...(request.body !== undefined ? { 'content-length': String(Buffer.byteLength(request.body)) } : {}) },
      timeout: request.timeoutMs,
      ...(secure ? { ca: request.ca, minVersion: 'TLSv1.2' as const } : {}),
    }
    const req = (secure ? https : http).request(target, options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        let body: Record<string, unknown> = {}
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>
        } catch {
          // not JSON: callers report the status
        }
        resolve({ status: res.statusCode ?? 0, body })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })))
    req.on('error', reject)
    req.end(request.body)
  })
}

/** The cause of a failed request for a message: a code, with what a TLS failure means. */
export function describeFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ALTNAME/i.test(String(code))) {
    return `${code}: its certificate is not one of this cluster's CA for that address (mgmt.tls.ca, --ca-file)`
  }
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test((err as Error).message ?? '')) return `${code}: TLS and plain HTTP mixed up (https:// to a plain API or the reverse)`
  return String(code)
}

/** How a command reaches a node's API: https with the CA to verify it by, or plain http. */
export interface NodeTls {
  readonly tls: boolean
  readonly ca?: Buffer
}

/**
 * https or http for a command on a node's host: `--ca-file` means https verified against it; else
 * the local node's `mgmt.tls` (verified against `mgmt.tls.ca`, or its own certificate when it has
 * no CA); else `<dataDir>/mgmt-ca.pem`, which the local node writes when its API speaks TLS (root
 * on a provisioned host runs commands without the node's settings). A cluster's nodes are
 * configured alike, so a remote `--node` speaks what the local one does.
 */
export function nodeTlsFor(config: Config, caFile?: string): NodeTls {
  if (caFile) return { tls: true, ca: readCaFile(caFile, '--ca-file') }
  const tls = config.mgmt.tls
  if (tls) return { tls: true, ca: tls.ca ? readCaFile(tls.ca, 'mgmt.tls.ca') : readCaFile(tls.cert, 'mgmt.tls.cert') }
  const ca = readLocalCa(config.dataDir)
  return ca ? { tls: true, ca } : { tls: false }
}
