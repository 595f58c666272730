import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { once } from 'node:events'
import mqtt from 'mqtt'
import { startFleetmq, type LogLine, type RunningFleetmq } from '../helpers/fleetmq.js'
import { BrokerCoverage } from './coverage.js'
import { fuzz, sendInput } from './engine.js'
import { Rng } from './mutate.js'
import { TARGETS, inputName, type BrokerPorts, type Target, type TargetName } from './targets.js'

/*
 * Fuzzing every parser a node exposes to the network — MQTT (3.1, 3.1.1, 5.0), PROXY v1/v2, the
 * WebSocket handshake and frames, the management HTTP API — through the sockets of a real `fleetmq`
 * process, coverage-guided by that process's V8 block coverage (coverage.ts, engine.ts).
 *
 * Every run first replays the inputs under regressions/<target>/ (each once crashed a node or is
 * kept as a known attack), then fuzzes each target for its share of FUZZ_SECONDS (default
 * 60; raise it for a longer local run). An input that kills the process is written to
 * regressions/<target>/crash-<hash>.bin and fails the run: fix the broker and commit the file. After
 * each target a normal client must still connect, subscribe and receive its own message over MQTT
 * and over WebSocket, and /healthz must answer. FUZZ_SEED repeats a run's mutations;
 * FUZZ_TARGETS=mqtt,ws picks targets; FUZZ_REPORT=FILE writes the numbers as JSON.
 */

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 60)
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 0xffffffff))
/** Share of the time per target: the MQTT parser has the most code behind it. */
const SHARE: Record<TargetName, number> = { mqtt: 0.4, proxy: 0.2, ws: 0.2, mgmt: 0.2 }
/** FUZZ_TARGETS=mqtt,ws fuzzes only those (the regression inputs of all still replay). */
const ONLY = process.env.FUZZ_TARGETS?.split(',')
const REGRESSIONS = join(import.meta.dirname, 'regressions')

assert.ok(Number.isFinite(SECONDS) && SECONDS >= 0, `FUZZ_SECONDS must be a number of seconds, got ${JSON.stringify(process.env.FUZZ_SECONDS)}`)

interface Fuzzed {
  readonly fleetmq: RunningFleetmq
  /** Log lines at level error or fatal: on a standalone node only a defect logs them under network input. */
  readonly errors: LogLine[]
  /** The end of what the process wrote to stderr that is not a log line (an uncaught exception's stack). */
  readonly stderrTail: () => string
  readonly ports: BrokerPorts
  readonly coverage: BrokerCoverage
  readonly v8CoverageDir: string
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** A node with every network parser on a listener, its inspector on loopback for coverage. */
async function startBroker(): Promise<Fuzzed> {
  const inspectPort = await freePort()
  const v8CoverageDir = mkdtempSync(join(tmpdir(), 'fleetmq-fuzz-v8-'))
  const errors: LogLine[] = []
  const fleetmq = await startFleetmq({
    onLog: (line) => { if (line.level >= 50) errors.push(line) },
    config: {
      allowAnonymous: true,
      listeners: [
        { name: 'fuzz-mqtt', type: 'mqtt', host: '127.0.0.1', port: 0, connectRate: 0 },
        { name: 'fuzz-proxy', type: 'mqtt', host: '127.0.0.1', port: 0, connectRate: 0, proxyProtocol: 'optional' },
        { name: 'fuzz-ws', type: 'ws', host: '127.0.0.1', port: 0, connectRate: 0 },
      ],
      // A connection that stalls mid-header frees its slot after 2 s, not 10.
      limits: { connectTimeout: 2 },
    },
    env: { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectPort}`, NODE_V8_COVERAGE: v8CoverageDir },
  })
  let stderrTail = ''
  fleetmq.process.stderr?.on('data', (chunk: Buffer | string) => {
    const text = String(chunk).split('\n').filter((line) => line !== '' && !line.startsWith('{')).join('\n')
    if (text !== '') stderrTail = `${stderrTail}\n${text}`.slice(-2_000)
  })
  const coverage = await BrokerCoverage.attach(inspectPort)
  const ports = { mqtt: fleetmq.ports['fuzz-mqtt'], proxy: fleetmq.ports['fuzz-proxy'], ws: fleetmq.ports['fuzz-ws'], mgmt: fleetmq.mgmtPort! }
  return { fleetmq, errors, stderrTail: () => stderrTail, ports, coverage, v8CoverageDir }
}

const alive = ({ fleetmq, coverage }: Fuzzed): boolean => fleetmq.process.exitCode === null && fleetmq.process.signalCode === null && !coverage.exiting

/**
 * The node took no harm: it runs, and logged no error. An uncaught exception kills the process, or,
 * once a last-resort handler keeps it alive, is logged as an error: both are findings.
 */
const unharmed = (node: Fuzzed): boolean => alive(node) && node.errors.length === 0

/** Gives a dying process the few milliseconds its exit (or its error line) takes to be seen. */
async function unharmedAfter(node: Fuzzed, ms = 100): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline && unharmed(node)) await new Promise((r) => setTimeout(r, 10))
  return unharmed(node)
}

/** What went wrong: the exit code (or signal) of a node on its way out, or the errors it logged. */
async function harm(node: Fuzzed): Promise<string> {
  const { process: child } = node.fleetmq
  if (alive(node)) return `the broker logged: ${node.errors.map((l) => JSON.stringify(l)).join('\n')}`
  if (child.exitCode === null && child.signalCode === null) await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 5_000))])
  return `the broker exited (${child.exitCode ?? child.signalCode}):${node.stderrTail()}`
}

/** A fresh node in place of a harmed one. */
async function replaceNode(): Promise<void> {
  if (alive(node)) await node.fleetmq.stop('SIGKILL')
  node.coverage.close()
  rmSync(node.v8CoverageDir, { recursive: true, force: true })
  node = await startBroker()
}

/**
 * What a user checks: a client connects, subscribes and gets its own message, on MQTT and on
 * WebSocket; /healthz answers. Patient: fuzzed management requests with Basic credentials each cost
 * a password hash on libuv's thread pool, and the node may still be working through them.
 */
async function assertServing(node: Fuzzed): Promise<void> {
  assert.ok(alive(node), `the broker process exited (${node.fleetmq.process.exitCode ?? node.fleetmq.process.signalCode})`)
  for (const url of [`mqtt://127.0.0.1:${node.ports.mqtt}`, `ws://127.0.0.1:${node.ports.ws}/mqtt`]) {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, clientId: `fuzz-check-${Date.now()}`, reconnectPeriod: 0, connectTimeout: 30_000 })
    try {
      await client.subscribeAsync('fuzz-check/#', { qos: 1 })
      const received = new Promise<string>((resolve) => client.once('message', (_topic, payload) => resolve(String(payload))))
      await client.publishAsync('fuzz-check/ping', 'still serving', { qos: 1 })
      const timeout = new Promise<string>((_, reject) => setTimeout(() => reject(new Error(`no message back within 10 s on ${url}`)), 10_000).unref())
      assert.equal(await Promise.race([received, timeout]), 'still serving')
    } finally {
      await client.endAsync()
    }
  }
  const health = await fetch(`http://127.0.0.1:${node.ports.mgmt}/healthz`)
  assert.equal(health.status, 200)
}

const regressionFiles = (target: Target): string[] => {
  const dir = join(REGRESSIONS, target.name)
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.bin')).sort().map((f) => join(dir, f)) : []
}

function keepCrash(target: Target, input: Buffer): string {
  const dir = join(REGRESSIONS, target.name)
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `crash-${inputName(input)}.bin`)
  writeFileSync(file, input)
  return file
}

let node = await startBroker()
const report: Record<string, unknown> = { seed: SEED, seconds: SECONDS, targets: {} as Record<string, unknown> }
const rng = new Rng(SEED)

after(async () => {
  if (alive(node)) await node.fleetmq.stop('SIGKILL')
  node.coverage.close()
  rmSync(node.v8CoverageDir, { recursive: true, force: true })
})

/** Replays `inputs` one at a time, on a fresh node after each harm, until one harms a node; answers that input. */
async function findCulprit(target: Target, inputs: readonly Buffer[]): Promise<Buffer | undefined> {
  for (const input of inputs) {
    if (!unharmed(node)) await replaceNode()
    await sendInput(target.port(node.ports), input)
    if (!(await unharmedAfter(node, 300))) return input
  }
  return undefined
}

test('the regression inputs leave the broker serving', async () => {
  const harmful: string[] = []
  for (const target of TARGETS) {
    for (const file of regressionFiles(target)) {
      await sendInput(target.port(node.ports), readFileSync(file))
      if (!(await unharmedAfter(node))) {
        harmful.push(`${file}: ${await harm(node)}`)
        await replaceNode()
      }
    }
  }
  assert.deepEqual(harmful, [], 'regression inputs that harm the broker')
  await assertServing(node)
})

for (const target of TARGETS.filter((t) => ONLY === undefined || ONLY.includes(t.name))) {
  test(`fuzzing the ${target.name} parser for ${(SECONDS * SHARE[target.name]).toFixed(0)} s leaves the broker serving (seed ${SEED})`, async (t) => {
    const seeds = target.seeds(new Rng(SEED)).filter((s) => target.sendable(s))
    const corpus = [...seeds, ...regressionFiles(target).map((f) => readFileSync(f))]
    const result = await fuzz(target, { port: target.port(node.ports), coverage: node.coverage, unharmed: () => unharmed(node) }, rng, SECONDS * SHARE[target.name], corpus)
    const summary = {
      execs: result.execs,
      seconds: Number(result.seconds.toFixed(1)),
      execsPerSecond: Math.round(result.execs / result.seconds),
      seeds: seeds.length,
      corpus: result.corpus.length,
      newBlocks: result.newBlocks,
      skipped: result.skipped,
    }
    ;(report.targets as Record<string, unknown>)[target.name] = summary
    t.diagnostic(`${target.name}: ${JSON.stringify(summary)}`)
    if (result.suspects) {
      const what = await harm(node)
      const culprit = await findCulprit(target, result.suspects)
      const kept = culprit ? `kept as ${keepCrash(target, culprit)}: fix the broker and commit the file` : 'no single input reproduces it'
      if (!unharmed(node)) await replaceNode()
      assert.fail(`a ${target.name} input harmed the broker; ${kept}\n${what}`)
    }
    await assertServing(node)
  })
}

test('the broker stops cleanly after the fuzzing; coverage of the parsers', async (t) => {
  report.blocks = node.coverage.blocks
  assert.equal(await node.fleetmq.stop(), 0)
  const lines = node.coverage.lineCoverage(node.v8CoverageDir)
  report.lineCoverage = lines
  for (const { module, covered, lines: total } of lines) t.diagnostic(`${module}: ${covered}/${total} lines (${(100 * covered / Math.max(1, total)).toFixed(1)} %)`)
  t.diagnostic(`blocks run in the broker and its parsing libraries: ${node.coverage.blocks}`)
  if (process.env.FUZZ_REPORT) writeFileSync(process.env.FUZZ_REPORT, `${JSON.stringify(report, null, 2)}\n`)
})
