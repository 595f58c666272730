import { readFileSync } from 'node:fs'
import { CompressionTypes, Kafka, Partitioners, logLevel, type LogEntry, type Producer, type SASLOptions } from 'kafkajs'
import type { KafkaConnectorConfig } from '../config/schema.js'
import type { Sink } from './queue.js'

/*
 * A Kafka producer as a connector needs it. KafkaJS (pure JavaScript, no native code: docs/rules.md
 * says why it was chosen) speaks the protocol; retries and ordering are the action queue's
 * (queue.ts), so the client's own retries are few and short and a failure reaches the queue
 * quickly. Records with a key go to the partition the Java client would pick (murmur2), so one key
 * stays in one partition, in order. It runs on the connector's worker thread (kafka-connector.ts).
 */

export interface KafkaRecord {
  readonly topic: string
  readonly key: string | null
  readonly value: string
  readonly headers: Readonly<Record<string, string>>
}

export type KafkaProducer = Sink<KafkaRecord>

/** Where the client's own log lines go (debug level). */
export type DebugLog = (fields: Record<string, unknown>, message: string) => void

const ACKS = { all: -1, leader: 1, none: 0 } as const

function readSecret(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new Error(`cannot read ${what} ${file}: ${(err as Error).message}`)
  }
}

function saslOptions(config: KafkaConnectorConfig, name: string): SASLOptions | undefined {
  if (!config.sasl) return undefined
  const password = readSecret(config.sasl.passwordFile, `connectors.${name}.sasl.passwordFile`)
  const { mechanism, username } = config.sasl
  return { mechanism, username, password } as SASLOptions
}

function tlsOptions(config: KafkaConnectorConfig, name: string): boolean | { ca?: string; cert?: string; key?: string; servername?: string } {
  if (typeof config.tls === 'boolean') return config.tls
  const read = (file: string | undefined, key: string) => (file ? readSecret(file, `connectors.${name}.tls.${key}`) : undefined)
  return { ca: read(config.tls.caFile, 'caFile'), cert: read(config.tls.certFile, 'certFile'), key: read(config.tls.keyFile, 'keyFile'), servername: config.tls.servername }
}

/** Reads the connector's secret and TLS files: throws naming the key of one that cannot be read. */
export function checkKafkaFiles(name: string, config: KafkaConnectorConfig): void {
  saslOptions(config, name)
  tlsOptions(config, name)
}

export function createKafkaProducer(name: string, config: KafkaConnectorConfig, debug: DebugLog): KafkaProducer {
  const kafka = new Kafka({
    clientId: config.clientId,
    brokers: [...config.bootstrap],
    ssl: tlsOptions(config, name),
    sasl: saslOptions(config, name),
    connectionTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
    // The action queue retries with its own backoff; the client gives up after one quick retry.
    retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 1_000 },
    // The client logs every failed connection attempt as an error: debug here; the action queue
    // logs a sink going down and coming back once each.
    logLevel: logLevel.INFO,
    logCreator: () => ({ namespace, label, log: entry }: LogEntry) => {
      debug({ connector: name, kafka: { namespace, level: label, ...entry } }, `kafka ${name}: ${entry.message}`)
    },
  })
  const compression = config.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None
  const acks = ACKS[config.acks]

  // A producer that failed is dropped and a new one connected for the next attempt: KafkaJS does
  // not always reconnect a producer by itself once every broker went away.
  let producer: Promise<Producer> | undefined
  let closed = false
  const connect = (): Promise<Producer> => {
    if (!producer) {
      const created = kafka.producer({
        idempotent: config.idempotent,
        // The idempotent producer's ordering guarantee holds with one request in flight.
        maxInFlightRequests: config.idempotent ? 1 : undefined,
        allowAutoTopicCreation: true,
        createPartitioner: Partitioners.DefaultPartitioner,
        retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 1_000 },
      })
      const connecting = created.connect().then(() => created)
      producer = connecting
      connecting.catch(() => {
        if (producer === connecting) producer = undefined
        void created.disconnect().catch(() => {})
      })
    }
    return producer
  }
  const discard = (failed: Promise<Producer>): void => {
    if (producer !== failed) return
    producer = undefined
    void failed.then((p) => p.disconnect()).catch(() => {})
  }

  return {
    async send(batch) {
      if (closed) throw new Error(`connector ${name} is closed`)
      const current = connect()
      const byTopic = new Map<string, { key: string | null; value: string; headers: Record<string, string> }[]>()
      for (const record of batch) {
        let messages = byTopic.get(record.topic)
        if (!messages) byTopic.set(record.topic, (messages = []))
        messages.push({ key: record.key, value: record.value, headers: { ...record.headers } })
      }
      try {
        await (await current).sendBatch({
          acks,
          timeout: config.requestTimeout,
          compression,
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        })
      } catch (err) {
        discard(current)
        throw err
      }
    },
    async close() {
      closed = true
      const current = producer
      producer = undefined
      await current?.then((p) => p.disconnect()).catch(() => {})
    },
  }
}
