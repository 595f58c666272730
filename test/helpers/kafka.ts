import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './redis.js'

/*
 * A real Apache Kafka 4.x broker in KRaft mode (one JVM as controller and broker) on free loopback
 * ports, in its own temp folder, stopped by PID. The jars come from `npm run setup`
 * (scripts/setup.sh resolves them with Maven); Maven's artifacts carry no shell scripts, so the
 * storage tool and the broker are started by their main classes. Debian's `kcat` reads topics back.
 */

const run = promisify(execFile)

/** Keep in step with KAFKA_VERSION in scripts/setup.sh. */
export const KAFKA_VERSION = '4.4.0'
export const KAFKA_LIBS = resolve(import.meta.dirname, '../../.cache/kafka', KAFKA_VERSION)

/**
 * Small heap, the serial collector and C1 only: a test broker moves little data, and a start then
 * costs about a third less CPU on 2 shared cores than with the default tiered JIT.
 */
const JVM_OPTIONS = ['-Xms64m', '-Xmx512m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Djava.awt.headless=true']

export interface KafkaBroker {
  /** `127.0.0.1:PORT`, what a client takes as its bootstrap server. */
  readonly bootstrap: string
  readonly port: number
  readonly controllerPort: number
  readonly dir: string
  /** PID of the running JVM (changes after `start()`). */
  pid(): number | undefined
  /** Milliseconds from spawn to a broker answering metadata requests, for the last start. */
  startMs(): number
  /** SIGTERM (a controlled shutdown), then waits for the JVM to exit. */
  stop(): Promise<void>
  /** Starts the JVM again on the same folder and ports (after `stop()`). */
  start(): Promise<void>
}

export interface KafkaOptions {
  /** Partitions of an automatically created topic (default 1: one total order to read back). */
  partitions?: number
  /** Milliseconds to wait for the broker to answer (default 60 s: the JVM is slow on a busy machine). */
  readyTimeoutMs?: number
}

/** `key=value` lines of a single-node KRaft server on loopback. */
export function kafkaProperties(dir: string, port: number, controllerPort: number, partitions = 1): string {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    `log.dirs=${join(dir, 'data')}`,
    `num.partitions=${partitions}`,
    'auto.create.topics.enable=true',
    // One broker: internal topics with one replica, one partition, no rebalance delay.
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    '',
  ].join('\n')
}

/** A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid form). */
const clusterId = (): string => randomBytes(16).toString('base64url')

function requireLibs(): void {
  if (!existsSync(join(KAFKA_LIBS, 'complete'))) {
    throw new Error(`Apache Kafka ${KAFKA_VERSION} is not in ${KAFKA_LIBS}: run npm run setup (it resolves the jars with Maven)`)
  }
}

/** Runs one of Kafka's main classes to completion; rejects with its output on failure. */
async function runJava(mainClass: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run('java', [...JVM_OPTIONS, '-cp', `${KAFKA_LIBS}/*`, mainClass, ...args], { timeout: 120_000 })
    return stdout
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string }
    throw new Error(`${mainClass} ${args.join(' ')} failed: ${(err as Error).message}\n${stdout ?? ''}${stderr ?? ''}`)
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
  requireLibs()
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-kafka-'))
  const port = await freePort()
  const controllerPort = await freePort()
  const bootstrap = `127.0.0.1:${port}`
  const properties = join(dir, 'server.properties')
  mkdirSync(join(dir, 'data'))
  writeFileSync(properties, kafkaProperties(dir, port, controllerPort, options.partitions))
  // What `kafka-storage.sh format` does: writes meta.properties and the bootstrap metadata.
  await runJava('kafka.tools.StorageTool', ['format', '--cluster-id', clusterId(), '--config', properties, '--ignore-formatted'])

  let child: ChildProcess | undefined
  let lastStartMs = 0
  const start = async (): Promise<void> => {
    const began = Date.now()
    const out = openSync(join(dir, 'kafka.out'), 'a')
    const jvm = spawn('java', [...JVM_OPTIONS, '-cp', `${KAFKA_LIBS}/*`, 'kafka.Kafka', properties], { stdio: ['ignore', out, out] })
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
  await start()
  return { bootstrap, port, controllerPort, dir, pid: () => child?.pid, startMs: () => lastStartMs, stop, start }
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
