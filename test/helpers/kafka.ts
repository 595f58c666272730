import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './redis.js'
import { kafkaFormatArgs, kafkaMissing, kafkaProperties, kafkaServerArgs } from '../../scripts/lib/kafka.js'

/*
 * A real Apache Kafka 4.x broker in KRaft mode (scripts/lib/kafka.ts) on free loopback ports, in
 * its own temp folder, stopped by PID. Debian's `kcat` reads topics back.
 */

const run = promisify(execFile)

export { KAFKA_VERSION } from '../../scripts/lib/kafka.js'

export interface KafkaBroker {
  /** `127.0.0.1:PORT`, what a client takes as its bootstrap server. */
  readonly bootstrap: string
  readonly port: number
  readonly controllerPort: number
  /** `127.0.0.1:PORT` of the SASL listener, when one was asked for. */
  readonly saslBootstrap: string | undefined
  readonly dir: string
  /** PID of the running JVM (changes after `start()`). */
  pid(): number | undefined
  /** Milliseconds from spawn to a broker answering metadata requests, for the last start. */
  startMs(): number
  /** SIGTERM (a controlled shutdown), then waits for the JVM to exit. */
  stop(): Promise<void>
  /** Starts the JVM again on the same folder and ports (after `stop()`). */
  start(): Promise<void>
  /** Stops the JVM and removes its folder. */
  destroy(): Promise<void>
}

export interface KafkaOptions {
  /** Partitions of an automatically created topic (default 1: one total order to read back). */
  partitions?: number
  /** Milliseconds to wait for the broker to answer (default 60 s: the JVM is slow on a busy machine). */
  readyTimeoutMs?: number
  /** Also a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for this user. */
  sasl?: { username: string; password: string }
  /** Format the folder and pick the ports, but start the JVM only at `start()`: a sink down from the beginning. */
  deferStart?: boolean
}

/** Runs a JVM to completion; rejects with its output on failure. */
async function runJava(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('java', args, { timeout: 120_000 })
    return stdout
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string }
    throw new Error(`java ${args.join(' ')} failed: ${(err as Error).message}\n${stdout ?? ''}${stderr ?? ''}`)
  }
}

/** True once the broker lists itself in a metadata response (kcat -L). */
async function answers(bootstrap: string): Promise<boolean> {
  try {
    const { stdout } = await run('kcat', ['-L', '-b', bootstrap, '-m', '2'], { timeout: 5_000 })
    return /1 brokers:/.test(stdout)
  } catch {
    return false
  }
}

/** Started processes, killed if the test process exits without stopping them. */
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export async function startKafka(options: KafkaOptions = {}): Promise<KafkaBroker> {
  const missing = kafkaMissing(existsSync)
  if (missing) throw new Error(missing)
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-kafka-'))
  const port = await freePort()
  const controllerPort = await freePort()
  const sasl = options.sasl ? { ...options.sasl, port: await freePort() } : undefined
  const bootstrap = `127.0.0.1:${port}`
  const properties = join(dir, 'server.properties')
  mkdirSync(join(dir, 'data'))
  writeFileSync(properties, kafkaProperties(join(dir, 'data'), port, controllerPort, options.partitions, sasl))
  await runJava(kafkaFormatArgs(properties, sasl))

  let child: ChildProcess | undefined
  let lastStartMs = 0
  const start = async (): Promise<void> => {
    const began = Date.now()
    const out = openSync(join(dir, 'kafka.out'), 'a')
    const jvm = spawn('java', kafkaServerArgs(properties), { stdio: ['ignore', out, out] })
    closeSync(out)
    child = jvm
    running.add(jvm)
    jvm.once('exit', () => running.delete(jvm))
    const deadline = began + (options.readyTimeoutMs ?? 60_000)
    while (!(await answers(bootstrap))) {
      if (jvm.exitCode !== null || jvm.signalCode !== null) {
        throw new Error(`Kafka exited (${jvm.exitCode ?? jvm.signalCode}) before answering on ${bootstrap}:\n${readFileSync(join(dir, 'kafka.out'), 'utf8').slice(-4000)}`)
      }
      if (Date.now() > deadline) {
        jvm.kill('SIGKILL')
        throw new Error(`Kafka did not answer on ${bootstrap} within ${options.readyTimeoutMs ?? 60_000} ms`)
      }
      await new Promise((r) => setTimeout(r, 200))
    }
    lastStartMs = Date.now() - began
  }
  const stop = async (): Promise<void> => {
    const jvm = child
    if (!jvm || jvm.exitCode !== null || jvm.signalCode !== null) return
    const exited = once(jvm, 'exit')
    jvm.kill('SIGTERM')
    // A controlled shutdown takes about 2 s; a JVM stuck past 30 s is killed.
    const timer = setTimeout(() => jvm.kill('SIGKILL'), 30_000)
    await exited
    clearTimeout(timer)
  }
  if (!options.deferStart) await start()
  return { bootstrap, port, controllerPort, saslBootstrap: sasl ? `127.0.0.1:${sasl.port}` : undefined, dir, pid: () => child?.pid, startMs: () => lastStartMs, stop, start,
    async destroy() {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

export interface KafkaRecord {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly key: string | null
  readonly payload: string | null
  readonly headers: readonly string[]
}

/** Every record of `topic` so far, read with `kcat -C -J` from the beginning to the end. */
export async function readTopic(bootstrap: string, topic: string): Promise<KafkaRecord[]> {
  const { stdout } = await run('kcat', ['-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-e', '-q', '-J'], { timeout: 30_000, maxBuffer: 256 * 1024 * 1024 })
  return stdout.split('\n').filter((line) => line.trim() !== '').map((line) => {
    const record = JSON.parse(line) as { topic: string; partition: number; offset: number; key: string | null; payload: string | null; headers?: string[] }
    return { topic: record.topic, partition: record.partition, offset: record.offset, key: record.key, payload: record.payload, headers: record.headers ?? [] }
  })
}

/** Reads `topic` until it holds at least `count` records (or the time is up: returns what is there). */
export async function waitForRecords(bootstrap: string, topic: string, count: number, timeoutMs = 30_000): Promise<KafkaRecord[]> {
  const deadline = Date.now() + timeoutMs
  let records: KafkaRecord[] = []
  for (;;) {
    try {
      records = await readTopic(bootstrap, topic)
    } catch {
      // the topic does not exist yet
    }
    if (records.length >= count || Date.now() > deadline) return records
    await new Promise((r) => setTimeout(r, 250))
  }
}
