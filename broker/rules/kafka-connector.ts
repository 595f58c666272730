import { Worker } from 'node:worker_threads'
import type { KafkaConnectorConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { checkKafkaFiles, type KafkaRecord } from './kafka.js'
import type { WorkerReply, WorkerRequest, WorkerSettings } from './kafka-worker.js'
import type { Sink } from './queue.js'

/*
 * The Kafka connector: one producer per configured connector, shared by every action that names
 * it, on a worker thread of its own. Encoding records costs the node's thread about twice what
 * evaluating the rule does (docs/rules.md, cost per message); on the worker it runs beside the MQTT
 * traffic instead of taking turns with it. A worker that dies fails the batches it held (the queues
 * retry them) and is started again on the next send.
 */

export interface KafkaConnector {
  readonly name: string
  /** A sink writing records through this connector's producer. */
  sink(): Sink<KafkaRecord>
  close(): Promise<void>
}

/** The compiled worker beside this module (.ts when run from source under tsx). */
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './kafka-worker.ts' : './kafka-worker.js', import.meta.url)

const CLOSE_TIMEOUT_MS = 5_000

export function createKafkaConnector(name: string, config: KafkaConnectorConfig, log: Logger): KafkaConnector {
  // At start, on this thread: a missing password file stops the node with its key named.
  checkKafkaFiles(name, config)
  let worker: Worker | undefined
  let nextId = 0
  let closed = false
  const pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>()

  const failAll = (reason: string): void => {
    for (const { reject } of pending.values()) reject(new Error(reason))
    pending.clear()
  }

  const start = (): Worker => {
    const settings: WorkerSettings = { name, config, debug: log.isLevelEnabled('debug') }
    const started = new Worker(WORKER_URL, { workerData: settings })
    started.on('message', (reply: WorkerReply) => {
      if (reply.type === 'log') return log.debug(reply.fields, reply.message)
      if (reply.type !== 'sent') return
      const waiter = pending.get(reply.id)
      pending.delete(reply.id)
      if (reply.error === undefined) waiter?.resolve()
      else waiter?.reject(new Error(reply.error))
    })
    started.on('error', (err) => log.error({ err, connector: name }, `connector ${name}: its worker failed: ${err.message}`))
    started.on('exit', (code) => {
      if (worker === started) worker = undefined
      failAll(`connector ${name}: its worker exited (${code})`)
    })
    return started
  }

  const request = (message: WorkerRequest): void => {
    worker ??= start()
    worker.postMessage(message)
  }

  return {
    name,
    sink() {
      return {
        send(batch) {
          if (closed) return Promise.reject(new Error(`connector ${name} is closed`))
          const id = nextId++
          return new Promise<void>((resolve, reject) => {
            pending.set(id, { resolve, reject })
            request({ type: 'send', id, records: batch })
          })
        },
        close: async () => {},
      }
    },
    async close() {
      closed = true
      const running = worker
      if (!running) return
      const done = new Promise<void>((resolve) => {
        running.on('message', (reply: WorkerReply) => { if (reply.type === 'closed') resolve() })
        running.once('exit', () => resolve())
      })
      running.postMessage({ type: 'close' } satisfies WorkerRequest)
      const timer = setTimeout(() => void running.terminate(), CLOSE_TIMEOUT_MS)
      await done
      clearTimeout(timer)
      await running.terminate()
    },
  }
}
