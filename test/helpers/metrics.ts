import type { RunningFleetmq } from './fleetmq.js'

/** The admin user tests add (`startFleetmq({ users: [METRICS_ADMIN] })`) to read `/metrics`. */
export const METRICS_ADMIN = Object.freeze({ username: 'ops', password: 'ops-metrics-password-1', admin: true })

/** `credentials: null` sends none. */
export async function mgmtGet(broker: RunningFleetmq, path: string, credentials: { username: string; password: string } | null = METRICS_ADMIN): Promise<Response> {
  const headers: Record<string, string> = {}
  if (credentials) headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`
  return fetch(`http://127.0.0.1:${broker.mgmtPort}${path}`, { headers })
}

/** `GET /metrics` as the admin; throws with the status when it is not 200. */
export async function scrapeMetrics(broker: RunningFleetmq): Promise<string> {
  const res = await mgmtGet(broker, '/metrics')
  const body = await res.text()
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${body}`)
  return body
}

/**
 * The value of one sample in Prometheus text format; `labels` must all match. NaN when absent,
 * so a comparison with it fails.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line)
    if (!match || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3])
  }
  return Number.NaN
}
