import type { Aedes, Client } from 'aedes'
import { FLEETMQ_VERSION } from '../version.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import type { Metrics, NodeStats } from '../mgmt/metrics.js'
import { describeClient } from '../features/connection-log.js'

/*
 * `$SYS` statistics, mosquitto's names under a node prefix: `$SYS/broker/<nodeId>/clients/connected`
 * and so on, every `sysInterval` seconds. The node id is in the topic because in a cluster every
 * node publishes its own figures and Redis fans them out to every node: under mosquitto's bare
 * `$SYS/broker/clients/connected` three nodes would overwrite each other. `$SYS/broker/#` still
 * shows everything, `$SYS/broker/+/clients/connected` one figure per node.
 *
 * Nothing is retained (mosquitto retains its `$SYS` tree): a retained figure outlives the node that
 * published it and would be read as current after the node is gone. A subscriber gets fresh values
 * within one interval.
 *
 * Each client's connect and disconnect is published as JSON on
 * `$SYS/broker/<nodeId>/clients/<clientId>/connected|disconnected` with the real client address
 * (the PROXY header's source behind a load balancer). aedes' own `$SYS/<brokerId>/new/clients`
 * carries the bare client id and drives session takeover between nodes, so it stays as it is.
 */


export interface SysOptions {
  readonly aedes: Aedes
  readonly metrics: Metrics
  /** Seconds between publications. */
  readonly interval: number
  readonly version?: string
  readonly log: Logger
}

export interface SysPublisher {
  /** The topic prefix, `$SYS/broker/<nodeId>/`. */
  readonly prefix: string
  close(): void
}

/** A client id as one topic level: `/`, `+`, `#` and `%` are percent-encoded [MQTT-4.7.1]. */
export function topicLevel(clientId: string): string {
  return clientId.replace(/[%/+#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)
}

/** The statistics as topic suffixes and payloads, mosquitto's names where it has one. */
export function sysMessages(stats: NodeStats, uptimeSeconds: number, version: string): [string, string][] {
  const messages: [string, string][] = [
    ['uptime', `${Math.floor(uptimeSeconds)} seconds`],
    ['version', `fleetmq version ${version}`],
    ['clients/connected', String(stats.clientsConnected)],
    ['clients/total', String(stats.clientsTotal)],
    ['messages/received', String(stats.messagesReceived)],
    ['messages/sent', String(stats.messagesSent)],
    ['publish/messages/dropped', String(stats.messagesDropped)],
    ['bytes/received', String(stats.bytesReceived)],
    ['bytes/sent', String(stats.bytesSent)],
    ['subscriptions/count', String(stats.subscriptions)],
  ]
  if (stats.retained !== undefined) messages.push(['retained messages/count', String(stats.retained)])
  return messages
}

export function startSys(options: SysOptions): SysPublisher {
  const { aedes, metrics, log } = options
  const prefix = `$SYS/broker/${aedes.id}/`
  const started = Date.now()

  const publish = (suffix: string, payload: string): void => {
    if (aedes.closed) return
    aedes.publish({ cmd: 'publish', topic: prefix + suffix, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, (err) => {
      if (err) log.debug({ err, topic: prefix + suffix }, `could not publish ${prefix}${suffix}: ${err.message}`)
    })
  }

  let publishing = false
  const publishStats = async (): Promise<void> => {
    if (publishing) return
    publishing = true
    try {
      await metrics.retainedCount().catch(() => undefined)
      for (const [suffix, payload] of sysMessages(metrics.stats(), (Date.now() - started) / 1000, options.version ?? FLEETMQ_VERSION)) publish(suffix, payload)
    } finally {
      publishing = false
    }
  }

  const onClient = (client: Client): void => {
    publish(`clients/${topicLevel(client.id)}/connected`, JSON.stringify({ ...describeClient(client), connectedAt: new Date().toISOString() }))
  }
  const onDisconnect = (client: Client): void => {
    publish(`clients/${topicLevel(client.id)}/disconnected`,
      JSON.stringify({ ...describeClient(client), reasonCode: client.disconnectReasonCode ?? undefined, disconnectedAt: new Date().toISOString() }))
  }
  aedes.on('client', onClient)
  aedes.on('clientDisconnect', onDisconnect)

  const first = setImmediate(() => void publishStats())
  const timer = setInterval(() => void publishStats(), options.interval * 1000)
  timer.unref()

  return {
    prefix,
    close() {
      clearImmediate(first)
      clearInterval(timer)
      aedes.off('client', onClient)
      aedes.off('clientDisconnect', onDisconnect)
    },
  }
}

/** `$SYS` as a feature: `attach` starts it once the broker runs, `close` stops it with the node. */
export function sysFeature(options: Omit<SysOptions, 'aedes'>): Feature & { attach(aedes: Aedes): SysPublisher } {
  let publisher: SysPublisher | undefined
  return {
    name: 'sys',
    attach(aedes) {
      publisher = startSys({ ...options, aedes })
      return publisher
    },
    close() {
      publisher?.close()
    },
  }
}
