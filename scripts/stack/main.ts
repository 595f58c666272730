import { Command, InvalidArgumentError } from 'commander'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { stringify as toYaml } from 'yaml'
import { allPorts, DEFAULT_BASE_PORT, parseWith, planStack, renderHaproxyConfig, type StackPlan, type WithService } from './plan.js'
import { ProcessGroup, portsInUse, waitForPort } from './processes.js'
import { ensureSecrets, type StackSecrets } from './secrets.js'
import { SENTINEL_PRIMARY_NAME, startRedis } from './redis.js'
import { checkThroughLoadBalancer } from './check.js'
import { checkKafkaRule, kafkaPrerequisites, kafkaRulesConfig, SAMPLE_TOPIC, startKafka } from './kafka.js'
import { DEFAULTS } from '../../broker/config/defaults.js'

/*
 * `npm start`: the production topology on one machine. Redis with Sentinel, N FleetMQ nodes joined
 * with `fleetmq cluster join`, HAProxy terminating TLS and sending PROXY v2 as the NLB does. Ready
 * means a real publish and subscribe went through the load balancer across two nodes.
 */

const REPO = resolve(import.meta.dirname, '../..')
const FLEETMQ = join(REPO, 'bin/fleetmq.js')
const REQUIRED_COMMANDS = [
  ['redis-server', 'redis-server'],
  ['redis-sentinel', 'redis-sentinel'],
  ['haproxy', 'haproxy'],
  ['openssl', 'openssl'],
] as const

interface StackOptions {
  nodes: number
  stateDir: string
  ports: number
  json?: boolean
  fresh?: boolean
  with: WithService[]
}

const wholeNumber = (value: string): number => {
  const n = Number(value)
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`expected a whole number, got "${value}"`)
  return n
}

function missingPackages(): string[] {
  return REQUIRED_COMMANDS.filter(([command]) => spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0).map(([, pkg]) => pkg)
}

function nodeConfig(plan: StackPlan, index: number, stateDir: string, kafka: string | undefined): Record<string, unknown> {
  const node = plan.nodes[index]
  return {
    ...(kafka ? kafkaRulesConfig(kafka) : {}),
    dataDir: join(stateDir, 'nodes', node.name),
    listeners: [
      { name: 'mqtt', type: 'mqtt', host: '127.0.0.1', port: node.mqtt, proxyProtocol: 'required' },
      { name: 'ws', type: 'ws', host: '127.0.0.1', port: node.ws, proxyProtocol: 'required' },
    ],
    // As on AWS (infra/node-env.ts): HAProxy, like the NLB, drops connections idle for 350 s.
    limits: { serverKeepAlive: DEFAULTS.limits.maxKeepAlive },
    mgmt: { host: '127.0.0.1', port: node.mgmt },
    log: { format: 'json' },
  }
}

function clusterConfig(plan: StackPlan, secrets: StackSecrets): Record<string, unknown> {
  return {
    name: 'local',
    secretFile: secrets.clusterSecretFile,
    redis: {
      sentinels: plan.sentinels.map((p) => `127.0.0.1:${p}`),
      name: SENTINEL_PRIMARY_NAME,
      passwordFile: secrets.redisPasswordFile,
    },
  }
}

async function startStack(options: StackOptions): Promise<void> {
  const started = Date.now()
  const progress = (msg: string): void => {
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`)
  }
  const plan = planStack(options.ports, options.nodes, options.with)
  const missing = missingPackages()
  if (missing.length) throw new Error(`missing Debian packages: ${missing.join(', ')}; run npm run setup (or apt-get install ${missing.join(' ')})`)
  const kafkaProblem = plan.kafka ? kafkaPrerequisites() : undefined
  if (kafkaProblem) throw new Error(kafkaProblem)
  if (!existsSync(join(REPO, 'build/broker/cli/main.js'))) throw new Error('FleetMQ is not compiled; run npm run build (npm run setup does it)')
  const busy = await portsInUse(allPorts(plan))
  if (busy.length) {
    throw new Error(`ports in use: ${busy.join(', ')}; stop what uses them or choose another range with --ports BASE (the stack uses BASE to BASE+59)`)
  }
  if (options.fresh) rmSync(options.stateDir, { recursive: true, force: true })
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 })
  const secrets = ensureSecrets(options.stateDir)
  progress(`state in ${options.stateDir}${secrets.created ? ' (new: CA, certificate and credentials generated)' : ''}`)

  const group = new ProcessGroup(options.stateDir)
  let stopping = false
  const stop = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true
      progress('stopping')
      await group.stopAll()
    }
    process.exit(code)
  }
  process.on('SIGINT', () => void stop(0))
  process.on('SIGTERM', () => void stop(0))

  const running: RunningNode[] = []
  let kafka: string | undefined
  try {
    await startRedis(group, options.stateDir, { redisPorts: plan.redis, sentinelPorts: plan.sentinels, password: secrets.redisPassword }, progress)
    if (plan.kafka) kafka = await startKafka(group, options.stateDir, plan.kafka, progress)

    for (const [i, node] of plan.nodes.entries()) {
      const configFile = join(options.stateDir, 'nodes', `${node.name}.yaml`)
      mkdirSync(join(options.stateDir, 'nodes', node.name), { recursive: true })
      const config = nodeConfig(plan, i, options.stateDir, kafka)
      writeFileSync(configFile, toYaml(i === 0 ? { ...config, cluster: clusterConfig(plan, secrets) } : config))
      if (i === 0) {
        // The users are the cluster's, in its Redis: the admin is added there once, through the first node's config.
        const userAdd = spawnSync(process.execPath, [FLEETMQ, 'user', 'add', secrets.adminUser, '--admin', '--password-file', secrets.adminPasswordFile,
          '--config', configFile], { encoding: 'utf8' })
        if (userAdd.status !== 0 && !/exists/.test(userAdd.stderr)) throw new Error(`could not create the admin user: ${userAdd.stderr.trim()}`)
      }
      const managed = group.start(node.name, process.execPath, [FLEETMQ, 'start', '--config', configFile])
      await waitForPort(node.mgmt, 20_000, managed.child)
      if (i > 0) {
        execFileSync(process.execPath, [FLEETMQ, 'cluster', 'join', `127.0.0.1:${plan.nodes[0].mgmt}`, '--node', `127.0.0.1:${node.mgmt}`,
          '--config', configFile, '--cluster-secret-file', secrets.clusterSecretFile], { stdio: ['ignore', 'ignore', 'pipe'] })
      }
      await waitForPort(node.mqtt, 20_000, managed.child)
      running.push({ name: node.name, mgmt: `http://127.0.0.1:${node.mgmt}`, pid: managed.child.pid ?? 0, logFile: managed.logFile })
      progress(`${node.name} ${i === 0 ? 'started the cluster' : 'joined'} (mqtt ${node.mqtt}, mgmt ${node.mgmt})`)
    }

    const haproxyConfig = join(options.stateDir, 'haproxy.cfg')
    writeFileSync(haproxyConfig, renderHaproxyConfig(plan, { pem: secrets.haproxyPem, pidFile: join(options.stateDir, 'haproxy.pid') }))
    const haproxy = group.start('haproxy', 'haproxy', ['-db', '-f', haproxyConfig])
    await waitForPort(plan.front.mqtts, 10_000, haproxy.child)
    progress(`haproxy: mqtt ${plan.front.mqtt}, mqtts ${plan.front.mqtts}, wss ${plan.front.wss}`)

    await checkThroughLoadBalancer(plan, secrets)
    progress('checked: a message published through the load balancer reached a subscriber on another node')
    if (kafka) {
      await checkKafkaRule(plan, secrets, kafka)
      progress(`checked: a message on devices/+/telemetry reached the Kafka topic ${SAMPLE_TOPIC} through the sample rule`)
    }
  } catch (err) {
    const causes = group.exited().map((line) => `  ${line}\n`).join('')
    process.stderr.write(`npm start: ${(err as Error).message}\n${causes}  logs: ${join(options.stateDir, 'logs')}\n`)
    await stop(1)
  }
  printReady(plan, secrets, options, running, Date.now() - started, kafka)
}

interface RunningNode {
  readonly name: string
  readonly mgmt: string
  readonly pid: number
  readonly logFile: string
}

function printReady(plan: StackPlan, secrets: StackSecrets, options: StackOptions, nodes: readonly RunningNode[], elapsedMs: number, kafka: string | undefined): void {
  const endpoints = {
    mqtt: `mqtt://127.0.0.1:${plan.front.mqtt}`,
    mqtts: `mqtts://127.0.0.1:${plan.front.mqtts}`,
    wss: `wss://127.0.0.1:${plan.front.wss}/mqtt`,
  }
  // Every node serves the dashboard; the first one's is as good as any (sessions are per node).
  const dashboard = `${nodes[0].mgmt}/`
  if (options.json) {
    process.stdout.write(`${JSON.stringify({
      ready: true,
      readyInMs: elapsedMs,
      endpoints,
      dashboard,
      caFile: secrets.caFile,
      username: secrets.adminUser,
      password: secrets.adminPassword,
      nodes,
      stateDir: options.stateDir,
      ...(kafka ? { kafka: { bootstrap: kafka, topic: SAMPLE_TOPIC } } : {}),
    })}\n`)
    return
  }
  const auth = `-u ${secrets.adminUser} -P '${secrets.adminPassword}'`
  const kafkaLines = kafka ? `
Kafka (${kafka}) gets every devices/+/telemetry message through the rule telemetry-to-kafka:
  kcat -b ${kafka} -C -t ${SAMPLE_TOPIC} -f '%k %s\\n'
  mosquitto_pub -h 127.0.0.1 -p ${plan.front.mqtts} --cafile ${secrets.caFile} ${auth} -t devices/d1/telemetry -m '{"temp":35}'
` : ''
  process.stdout.write(`
FleetMQ is ready in ${(elapsedMs / 1000).toFixed(1)} s: ${plan.nodes.length} nodes, Redis with Sentinel, HAProxy in front${kafka ? ', Kafka beside' : ''}.

  MQTT      ${endpoints.mqtt}
  MQTT/TLS  ${endpoints.mqtts}   (CA: ${secrets.caFile})
  WSS       ${endpoints.wss}
  dashboard ${dashboard}   (sign in as the user below; every node's management port serves one)
  user      ${secrets.adminUser}
  password  ${secrets.created ? secrets.adminPassword : `(stored in ${secrets.adminPasswordFile})`}

Try it:
  mosquitto_sub -h 127.0.0.1 -p ${plan.front.mqtts} --cafile ${secrets.caFile} ${auth} -t 'demo/#' -v
  mosquitto_pub -h 127.0.0.1 -p ${plan.front.mqtts} --cafile ${secrets.caFile} ${auth} -t demo/hello -m world
${kafkaLines}
Ctrl-C stops everything; the state stays in ${options.stateDir} for the next start (--fresh starts over).
`)
}

export const stackCommand = new Command('npm start')
  .description('the production topology on this machine: Redis with Sentinel, FleetMQ nodes in one cluster, HAProxy terminating TLS')
  .option('--nodes <n>', 'FleetMQ nodes', wholeNumber, 3)
  .option('--state-dir <dir>', 'state folder (CA, credentials, data, logs)', join(REPO, '.fleetmq'))
  .option('--ports <base>', 'first port of the range the stack uses (BASE to BASE+59)', wholeNumber, DEFAULT_BASE_PORT)
  .option('--json', 'print one JSON object on stdout when ready')
  .option('--fresh', 'delete the state folder first and start over')
  .option('--with <servers>', 'servers to run beside the cluster, comma-separated: kafka (with the sample rule devices/+/telemetry → topic telemetry)', (value: string) => {
    try {
      return parseWith(value)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
  }, [] as WithService[])
  .action(async (options: StackOptions) => {
    await startStack({ ...options, stateDir: resolve(options.stateDir) })
  })

stackCommand.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`npm start: ${(err as Error).message}\n`)
  process.exit(1)
})
