import { parentPort, workerData } from 'node:worker_threads'
import type { KafkaConnectorConfig } from '../config/schema.js'
import { createKafkaProducer, type KafkaRecord } from './kafka.js'

/*
 * A Kafka connector's worker thread: the producer (encoding, checksums, the sockets) runs here, on
 * another core than the MQTT traffic. kafka-connector.ts is the other end.
 */

export type WorkerRequest = { readonly type: 'send'; readonly id: number; readonly records: readonly KafkaRecord[] } | { readonly type: 'close' }
export type WorkerReply =
  | { readonly type: 'sent'; readonly id: number; readonly error?: string }
  | { readonly type: 'log'; readonly fields: Record<string, unknown>; readonly message: string }
  | { readonly type: 'closed' }

export interface WorkerSettings {
  readonly name: string
  readonly config: KafkaConnectorConfig
  /** Post the client's log lines (only when the node logs at debug level). */
  readonly debug: boolean
}

const port = parentPort
if (port) {
  const post = (reply: WorkerReply): void => port.postMessage(reply)
  const settings = workerData as WorkerSettings
  const producer = createKafkaProducer(settings.name, settings.config, (fields, message) => {
    if (settings.debug) post({ type: 'log', fields, message })
  })
  port.on('message', (request: WorkerRequest) => {
    if (request.type === 'close') {
      void producer.close().finally(() => post({ type: 'closed' }))
      return
    }
    producer.send(request.records).then(
      () => post({ type: 'sent', id: request.id }),
      (err: unknown) => post({ type: 'sent', id: request.id, error: (err as Error).message ?? String(err) }),
    )
  })
}
