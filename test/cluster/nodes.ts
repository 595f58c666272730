import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { startRedis, stopRedis, type RedisServer } from '../helpers/redis.js'

/* Shared by the cluster tests: nodes on one Redis, a secret file, event-driven waits. */

export function secretFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'fleetmq-secret-')), 'cluster.secret')
  writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 })
  return file
}

export interface NodeOptions {
  /** Redis URL; omitted for a standalone node. */
  redis?: string
  secret?: string
  args?: string[]
  config?: Record<string, unknown>
  env?: NodeJS.ProcessEnv
}

/** One `fleetmq start` (anonymous clients allowed) in the cluster on `redis`. */
export async function startNode(options: NodeOptions = {}): Promise<RunningFleetmq> {
  const args = ['--allow-anonymous', '--log-level', 'debug']
  if (options.redis) args.push('--redis', options.redis)
  if (options.secret) args.push('--cluster-secret-file', options.secret)
  return startFleetmq({ args: [...args, ...(options.args ?? [])], env: options.env, ...(options.config ? { config: options.config } : {}) })
}

export async function startNodes(count: number, options: NodeOptions): Promise<RunningFleetmq[]> {
  const nodes: RunningFleetmq[] = []
  for (let i = 0; i < count; i++) nodes.push(await startNode(options))
  return nodes
}

export const mqttUrl = (node: RunningFleetmq): string => `mqtt://127.0.0.1:${node.ports.mqtt}`

// 20 s to CONNACK: these files share 2 cores with the overload flood and the host tests in CI.
export function connect(node: RunningFleetmq | string, options: IClientOptions = {}): Promise<MqttClient> {
  const url = typeof node === 'string' ? node : mqttUrl(node)
  return mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 20_000, ...options })
}

/** Polls `check` every 100 ms until it returns a value other than undefined/false. */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Collects messages of a client in arrival order. */
export function collect(client: MqttClient): { topic: string; payload: string; qos: number; retain: boolean }[] {
  const got: { topic: string; payload: string; qos: number; retain: boolean }[] = []
  client.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain }))
  return got
}

/** The node's management token as a request header: what `fleetmq cluster …` sends on the node's host. */
export function tokenOf(node: RunningFleetmq): Record<string, string> {
  return { authorization: `Bearer ${readFileSync(join(node.dir, 'mgmt.token'), 'utf8').trim()}` }
}

export async function getJson(port: number | undefined, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

export async function stopAll(nodes: (RunningFleetmq | undefined)[]): Promise<void> {
  await Promise.all(nodes.map((n) => n?.stop()))
}

/**
 * A bare MQTT 5.0 session on a socket (mqtt-packet): it records every packet and acknowledges
 * nothing, so its QoS 1 messages stay in flight, yet it still reads a DISCONNECT.
 */
export interface SilentSession {
  readonly publishes: string[]
  readonly disconnect: Promise<number>
  readonly closed: Promise<void>
  destroy(): void
}

export async function silentSession(node: RunningFleetmq, clientId: string, filter: string): Promise<SilentSession> {
  const { connect: netConnect } = await import('node:net')
  const mqttPacket = (await import('mqtt-packet')).default
  const socket = netConnect(node.ports.mqtt, '127.0.0.1')
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  const publishes: string[] = []
  let onConnack!: () => void
  let onSuback!: () => void
  let onDisconnect!: (code: number) => void
  const connacked = new Promise<void>((resolve) => { onConnack = resolve })
  const subacked = new Promise<void>((resolve) => { onSuback = resolve })
  const disconnect = new Promise<number>((resolve) => { onDisconnect = resolve })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  parser.on('packet', (packet) => {
    if (packet.cmd === 'connack') onConnack()
    if (packet.cmd === 'suback') onSuback()
    if (packet.cmd === 'publish') publishes.push(String(packet.payload))
    if (packet.cmd === 'disconnect') onDisconnect(packet.reasonCode ?? 0)
  })
  socket.on('data', (chunk) => parser.parse(chunk))
  socket.on('error', () => undefined)
  const send = (packet: Parameters<typeof mqttPacket.generate>[0]): void => { socket.write(mqttPacket.generate(packet, { protocolVersion: 5 })) }
  send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId, clean: false, keepalive: 60, properties: { sessionExpiryInterval: 600 } })
  await connacked
  send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 1 }] })
  await subacked
  return { publishes, disconnect, closed, destroy: () => socket.destroy() }
}

/** Connects and collects messages from the first packet on (queued messages can come with the CONNACK). */
export async function connectCollecting(node: RunningFleetmq | string, options: IClientOptions = {}): Promise<{ client: MqttClient; got: ReturnType<typeof collect> }> {
  const url = typeof node === 'string' ? node : mqttUrl(node)
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 20_000, ...options })
  const got = collect(client)
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  return { client, got }
}

/** The next `event` of an MQTT.js client (its typings are not a Node EventEmitter's). */
export function nextEvent<T extends unknown[]>(client: MqttClient, event: 'disconnect' | 'close' | 'connect'): Promise<T> {
  return new Promise((resolve) => client.once(event, (...args: unknown[]) => resolve(args as T)))
}

/**
 * The fixture of a file whose tests share `count` nodes on one fresh Redis: registers the before
 * and after hooks and returns the array, filled before the first test runs.
 */
export function clusterOnRedis(count: number): RunningFleetmq[] {
  return clusterWithRedis(count).nodes
}

/** clusterOnRedis, with its Redis server (for tests that talk to Redis themselves). */
export function clusterWithRedis(count: number): { readonly nodes: RunningFleetmq[]; redis(): RedisServer } {
  const nodes: RunningFleetmq[] = []
  let redis: RedisServer | undefined
  before(async () => {
    redis = await startRedis()
    nodes.push(...(await startNodes(count, { redis: redis.url })))
  })
  after(async () => {
    await stopAll(nodes)
    if (redis) await stopRedis(redis)
  })
  return { nodes, redis: () => redis ?? assert.fail('the cluster\'s Redis is not started yet') }
}

/**
 * Publishes "0", "1", … at QoS 1 every `intervalMs`, not awaiting each one (several are in flight
 * when a node dies; MQTT.js resends them). `acked` holds the numbers the broker PUBACKed.
 */
export function numberedPublisher(client: MqttClient, topic: string, intervalMs: number): { readonly acked: Set<number>; sent(): number; stop(): Promise<void> } {
  const acked = new Set<number>()
  let sent = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const seq = sent++
      client.publishAsync(topic, String(seq), { qos: 1 }).then(() => acked.add(seq), () => undefined)
      await new Promise((resolve) => setTimeout(resolve, intervalMs))
    }
  })()
  return { acked, sent: () => sent, stop: async () => { stopped = true; await loop } }
}
