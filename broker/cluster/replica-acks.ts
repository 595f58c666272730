import type { Redis } from 'ioredis'

/*
 * A write acknowledged by the Redis primary only is lost when the primary dies before a replica has
 * it: Redis replicates asynchronously, and Sentinel promotes a replica that may lack the last writes.
 * A node PUBACKs a QoS 1 message [MQTT-4.3.2-4] (and PUBRECs a QoS 2 one [MQTT-4.3.3-9]) once
 * aedes' publish has stored it, so without this an acknowledged message was lost with the primary.
 *
 * `WAIT numreplicas timeout` blocks until that many replicas acknowledged every write the issuing
 * connection made before it. So the persistence's writes that precede an acknowledgement to a client
 * resolve only after a `WAIT` on the same connection answered with enough replicas. One `WAIT` per
 * event-loop turn covers every write that completed in that turn, not one per message: WAIT blocks
 * the connection while it waits, so one per message would serialize every persistence command behind
 * a replication round trip.
 *
 * A `WAIT` sent on one connection says nothing about writes made on an earlier one: ioredis resends
 * a command whose connection dropped before its reply (autoResendUnfulfilledCommands), so a WAIT
 * cut by a failover would be answered by the new primary, which may not have the writes. Each
 * connection loss starts a new epoch; a batch whose WAIT answers in another epoch than its writes
 * fails. A failed or short WAIT rejects the writes: aedes then sends no PUBACK and closes the
 * publisher's connection, and the client resends the message on its next one [MQTT-4.4.0-1] (a
 * duplicate at worst, which QoS 1 allows).
 *
 * A primary with no replica connected (a one-node cluster, the first node before the others join,
 * every replica gone) has nothing to wait for: the writes resolve at once and are counted as
 * unreplicated, rather than every publish failing after the timeout. A replica that is connected but
 * behind is waited for; one that is gone is `min-replicas-to-write`'s job (docs/cluster.md).
 */

export interface ReplicaAcksStatus {
  /** WAIT commands sent. */
  readonly waits: number
  /** Writes that waited for a replica. */
  readonly writes: number
  /** Writes rejected because no replica acknowledged them in time or the connection changed. */
  readonly failures: number
  /** Writes acknowledged while the primary had no replica connected. */
  readonly unreplicated: number
}

export interface ReplicaAcks {
  /** Resolves once `replicas` replicas hold every write this connection completed so far. */
  replicated(): Promise<void>
  status(): ReplicaAcksStatus
}

interface Batch {
  readonly epoch: number
  readonly waiters: { resolve(): void; reject(err: Error): void }[]
}

export interface ReplicaAcksOptions {
  /** Replicas to wait for. */
  readonly replicas: number
  readonly timeoutMs: number
  /** Replicas the primary reports online (INFO replication), or undefined while unknown. */
  connectedReplicas(): number | undefined
}

export function replicaAcks(redis: Redis, options: ReplicaAcksOptions): ReplicaAcks {
  const { timeoutMs } = options
  let epoch = 0
  redis.on('close', () => { epoch++ })
  let batch: Batch | undefined
  let waits = 0
  let writes = 0
  let failures = 0
  let unreplicated = 0

  const flush = (current: Batch): void => {
    if (batch === current) batch = undefined
    const replicas = Math.min(options.replicas, options.connectedReplicas() ?? options.replicas)
    if (replicas === 0) {
      unreplicated += current.waiters.length
      for (const w of current.waiters) w.resolve()
      return
    }
    waits++
    const fail = (reason: string): void => {
      failures += current.waiters.length
      const err = new Error(`${reason}: the write is not acknowledged (cluster.redis.waitReplicas ${options.replicas}, waitTimeout ${timeoutMs} ms)`)
      for (const w of current.waiters) w.reject(err)
    }
    ;(redis.call('WAIT', replicas, timeoutMs) as Promise<number>).then((acked) => {
      if (epoch !== current.epoch) return fail('the connection to Redis was lost before a replica acknowledged the write')
      if (acked < replicas) return fail(`${acked} of ${replicas} Redis replicas acknowledged the write within ${timeoutMs} ms`)
      for (const w of current.waiters) w.resolve()
    }, (err: Error) => fail(`WAIT failed (${err.message})`))
  }

  return {
    replicated() {
      writes++
      if (batch === undefined || batch.epoch !== epoch) {
        const next: Batch = { epoch, waiters: [] }
        batch = next
        setImmediate(() => flush(next))
      }
      const current = batch
      return new Promise((resolve, reject) => current.waiters.push({ resolve, reject }))
    },
    status: () => ({ waits, writes, failures, unreplicated }),
  }
}
