import { execFile, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import { kafkaFormatArgs, kafkaMissing, kafkaProperties, kafkaServerArgs } from '../lib/kafka.js'
import { waitForPort, type ProcessGroup } from './processes.js'
import type { StackPlan } from './plan.js'
import type { StackSecrets } from './secrets.js'

/*
 * `npm start -- --with kafka`: Apache Kafka (KRaft, one JVM) beside the cluster, and the sample
 * rule that sends every node's devices/+/telemetry messages to the Kafka topic `telemetry`. The
 * data folder persists between starts like Redis'.
 */

const run = promisify(execFile)

export const SAMPLE_TOPIC = 'telemetry'

/** The connector and the sample rule every node gets. */
export function kafkaRulesConfig(bootstrap: string): Record<string, unknown> {
  return {
    connectors: { kafka: { type: 'kafka', bootstrap: [bootstrap] } },
    rules: [{
      id: 'telemetry-to-kafka',
      sql: 'SELECT * FROM "devices/+/telemetry"',
      actions: [{ type: 'kafka', connector: 'kafka', topic: SAMPLE_TOPIC, key: '${clientid}' }],
    }],
  }
}

/** Why `--with kafka` cannot run here (Java, kcat, the jars), or undefined. */
export function kafkaPrerequisites(): string | undefined {
  const commands = [['java', 'openjdk-17-jre-headless'], ['kcat', 'kcat']].filter(([command]) => spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0)
  if (commands.length) return `--with kafka needs ${commands.map(([, pkg]) => pkg).join(', ')}: run npm run setup`
  return kafkaMissing(existsSync)
}

export async function startKafka(group: ProcessGroup, stateDir: string, ports: NonNullable<StackPlan['kafka']>, progress: (msg: string) => void): Promise<string> {
  const dir = join(stateDir, 'kafka')
  const dataDir = join(dir, 'data')
  mkdirSync(dataDir, { recursive: true })
  const properties = join(dir, 'server.properties')
  writeFileSync(properties, kafkaProperties(dataDir, ports.port, ports.controller))
  if (!existsSync(join(dataDir, 'meta.properties'))) {
    const format = spawnSync('java', kafkaFormatArgs(properties), { encoding: 'utf8' })
    if (format.status !== 0) throw new Error(`could not format Kafka's data folder ${dataDir}: ${format.stderr.trim() || format.stdout.trim()}`)
  }
  const kafka = group.start('kafka', 'java', kafkaServerArgs(properties))
  // The JVM takes 5 to 10 s to listen on a busy 2-core machine.
  await waitForPort(ports.port, 90_000, kafka.child)
  progress(`kafka: 127.0.0.1:${ports.port} (KRaft, one node)`)
  return `127.0.0.1:${ports.port}`
}

/** A telemetry message published through the load balancer shows up in the Kafka topic. */
export async function checkKafkaRule(plan: StackPlan, secrets: StackSecrets, bootstrap: string, timeoutMs = 60_000): Promise<void> {
  const clientId = `stack-check-${process.pid}-${Date.now()}`
  const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${plan.front.mqtts}`, {
    ca: readFileSync(secrets.caFile), username: secrets.adminUser, password: secrets.adminPassword, clientId, reconnectPeriod: 0, connectTimeout: 5_000,
  })
  try {
    await client.publishAsync(`devices/${clientId}/telemetry`, JSON.stringify({ temp: 21.5, check: true }), { qos: 1 })
  } finally {
    await client.endAsync()
  }
  const deadline = Date.now() + timeoutMs
  for (;;) {
    // -o -100: the newest records; earlier starts left theirs in the topic.
    const read = await run('kcat', ['-C', '-b', bootstrap, '-t', SAMPLE_TOPIC, '-o', '-100', '-e', '-q', '-f', '%k\n'], { timeout: 15_000 }).catch(() => ({ stdout: '' }))
    if (read.stdout.split('\n').includes(clientId)) return
    if (Date.now() > deadline) throw new Error(`a message on devices/${clientId}/telemetry did not reach the Kafka topic ${SAMPLE_TOPIC} within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 500))
  }
}
