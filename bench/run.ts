import { parseArgs } from 'node:util'
import { availableParallelism, loadavg } from 'node:os'
import { BROKER_SETUPS, enableRealtime, openFilesLimit, type BrokerSetup } from './brokers.js'
import { OPEN_LOOP_SCENARIOS } from './open-loop.js'
import { PROFILES, QUICK_SCENARIOS, SCENARIOS as CLOSED_LOOP_SCENARIOS, type Metric, type Scenario, type ScenarioRun, type Target } from './scenarios.js'

/** The open-loop scenarios (bench/open-loop.ts) run in a full run, and with --only under --quick. */
const SCENARIOS: readonly Scenario[] = [...CLOSED_LOOP_SCENARIOS, ...OPEN_LOOP_SCENARIOS]

/*
 * `npm run bench`: every scenario against every broker setup in the same run, every broker process
 * (both nodes and Redis for the cluster) pinned to the broker cores and the load generator to
 * another, each scenario several times with fresh brokers (setups alternate in order between
 * runs, so drift on a shared machine hits all), and the medians compared with the first setup,
 * the reference, against each setup's own targets. A throughput run counts only when the broker's
 * core was the busy one (scenarios.ts throughputVerdict); the medians are taken over the runs that
 * count, and a row without one for both sides says INVALID instead of a verdict.
 */

const USAGE = `usage: npm run bench -- [--quick] [--json] [--runs N] [--only SCENARIO,…] [--brokers ID,…]
  --quick          one short run of one scenario of each kind (about a minute), for a smoke test
  --json           print the results as JSON instead of a table
  --runs N         runs of each scenario per broker (default 3; median reported)
  --only IDS       scenarios to run: ${SCENARIOS.map((s) => s.id).join(', ')}
  --brokers IDS    broker setups, the first being the reference: ${BROKER_SETUPS.map((b) => b.id).join(', ')}
  --broker-cpus C  cores for the brokers (taskset list, default 0)
  --generator-cpus C  cores for the load generator (default 1)
  --realtime       run the main thread of every broker process SCHED_FIFO (needs root or
                   CAP_SYS_NICE): a diagnostic for a busy machine, where other processes would
                   otherwise take the pinned core; the targets are judged without it`

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`)
  process.exit(2)
}

function pick<T extends { id: string }>(all: readonly T[], list: string | undefined, flag: string): T[] {
  if (!list) return [...all]
  return list.split(',').map((id) => all.find((x) => x.id === id.trim()) ?? fail(`${flag}: unknown "${id}"; choose from ${all.map((x) => x.id).join(', ')}`))
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function meets(target: Target, value: number): boolean {
  return target.op === '>=' ? value >= target.value : value <= target.value
}

function describeTarget(target: Target | undefined, unit: string): string {
  if (!target) return '—'
  const op = target.op === '>=' ? '≥' : '≤'
  return target.kind === 'ratio' ? `${op} ${target.value.toFixed(1)}×` : `${op} ${target.value} ${unit}`
}

interface RunRecord extends ScenarioRun {
  readonly scenario: string
  readonly broker: string
  readonly run: number
}

interface Row {
  readonly metric: string
  readonly label: string
  readonly unit: string
  /** Median per broker setup, over the runs that count (all runs where none does). */
  readonly medians: Readonly<Record<string, number>>
  readonly runs: Readonly<Record<string, readonly number[]>>
  /** Setups none of whose throughput runs measured the broker (see throughputVerdict). */
  readonly invalid: readonly string[]
  /** Median broker CPU µs per delivered message, per setup (throughput rows). */
  readonly cpuMicros: Readonly<Record<string, number>>
  /** Candidate ÷ reference, per candidate setup. */
  readonly ratios: Readonly<Record<string, number>>
  /** Reference ÷ candidate CPU per message, so ≥ 1 means the candidate is cheaper (throughput rows). */
  readonly cpuRatios: Readonly<Record<string, number>>
  /** Each candidate's target, described (`—` without one). */
  readonly targets: Readonly<Record<string, string>>
  /** Whether each candidate meets its target (absent without a target, or where a side is INVALID). */
  readonly met: Readonly<Record<string, boolean>>
}

function rowFor(metric: Metric, setups: readonly BrokerSetup[], records: readonly RunRecord[]): Row {
  const runs: Record<string, number[]> = {}
  const medians: Record<string, number> = {}
  const cpuMicros: Record<string, number> = {}
  const invalid: string[] = []
  for (const setup of setups) {
    const mine = records.filter((r) => r.broker === setup.id && metric.id in r.metrics)
    const counted = mine.filter((r) => r.invalid === undefined)
    if (counted.length === 0 && mine.length > 0) invalid.push(setup.id)
    runs[setup.id] = mine.map((r) => r.metrics[metric.id])
    medians[setup.id] = median((counted.length ? counted : mine).map((r) => r.metrics[metric.id]))
    const costs = mine.filter((r) => r.brokerCpuMicrosPerMessage !== undefined).map((r) => r.brokerCpuMicrosPerMessage as number)
    if (costs.length) cpuMicros[setup.id] = median(costs)
  }
  const [reference, ...candidates] = setups
  const ratios: Record<string, number> = {}
  const cpuRatios: Record<string, number> = {}
  const targets: Record<string, string> = {}
  const met: Record<string, boolean> = {}
  for (const candidate of candidates) {
    ratios[candidate.id] = medians[candidate.id] / medians[reference.id]
    if (candidate.id in cpuMicros && reference.id in cpuMicros) cpuRatios[candidate.id] = cpuMicros[reference.id] / cpuMicros[candidate.id]
    const target = metric.targets?.[candidate.id]
    targets[candidate.id] = describeTarget(target, metric.unit)
    const judged = target !== undefined && !invalid.includes(candidate.id) && (target.kind === 'absolute' || !invalid.includes(reference.id))
    if (judged) met[candidate.id] = meets(target, target.kind === 'ratio' ? ratios[candidate.id] : medians[candidate.id])
  }
  return { metric: metric.id, label: metric.label, unit: metric.unit, medians, runs, invalid, cpuMicros, ratios, cpuRatios, targets, met }
}

function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return 'n/a'
  if (unit === 'msg/s') return `${Math.round(value).toLocaleString('en')} ${unit}`
  return `${value.toFixed(value < 10 ? 2 : 1)} ${unit}`
}

/**
 * One column group per setup: its value (with `*` when none of its runs counted) and its broker CPU
 * per message; then, per candidate, the ratios to the reference, its target and whether it is met.
 */
function table(rows: readonly Row[], setups: readonly BrokerSetup[]): string {
  const [reference, ...candidates] = setups
  const value = (row: Row, id: string): string => `${formatValue(row.medians[id], row.unit)}${row.invalid.includes(id) ? ' *' : ''}`
  const cost = (row: Row, id: string): string => (id in row.cpuMicros ? `${row.cpuMicros[id].toFixed(2)} µs` : '')
  const header = ['scenario', reference.label, 'CPU/msg', ...candidates.flatMap((c) => [c.label, 'CPU/msg', 'ratio', 'CPU ratio', 'target', 'met?'])]
  const body = rows.map((row) => [
    row.label,
    value(row, reference.id),
    cost(row, reference.id),
    ...candidates.flatMap((c) => [
      value(row, c.id),
      cost(row, c.id),
      `${row.ratios[c.id].toFixed(2)}×`,
      c.id in row.cpuRatios ? `${row.cpuRatios[c.id].toFixed(2)}×` : '',
      row.targets[c.id],
      c.id in row.met ? (row.met[c.id] ? 'yes' : 'NO') : row.targets[c.id] !== '—' ? 'INVALID' : '—',
    ]),
  ])
  const widths = header.map((_, i) => Math.max(...[header, ...body].map((cells) => cells[i].length)))
  const line = (cells: readonly string[]): string => `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join(' | ')} |`
  return [line(header), `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line)].join('\n')
}

/** `uptime`'s three load averages. */
const loadAverages = (): string => loadavg().map((l) => l.toFixed(2)).join(', ')

async function main(): Promise<void> {
  const { values } = (() => {
    try {
      return parseArgs({
        options: {
          quick: { type: 'boolean', default: false },
          json: { type: 'boolean', default: false },
          runs: { type: 'string' },
          only: { type: 'string' },
          brokers: { type: 'string' },
          'broker-cpus': { type: 'string', default: '0' },
          'generator-cpus': { type: 'string', default: '1' },
          realtime: { type: 'boolean', default: false },
          help: { type: 'boolean', default: false },
        },
      })
    } catch (err) {
      return fail((err as Error).message)
    }
  })()
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    return
  }
  const base = values.quick ? PROFILES.quick : PROFILES.full
  const runs = values.runs === undefined ? base.runs : Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1) fail(`--runs: expected a whole number ≥ 1, got "${values.runs}"`)
  const profile = { ...base, runs }
  // Each side holds one descriptor per connection, plus a few for itself.
  if (openFilesLimit() < profile.idleConnections + 256) {
    fail(`the hard open-files limit (ulimit -Hn = ${openFilesLimit()}) is below the ${profile.idleConnections} idle connections the bench opens; raise it (limits.conf, LimitNOFILE=) or use --quick`)
  }
  const scenarios: Scenario[] = pick(SCENARIOS, values.only ?? (values.quick ? QUICK_SCENARIOS.join(',') : undefined), '--only')
  const setups: BrokerSetup[] = pick(BROKER_SETUPS, values.brokers, '--brokers')
  if (setups.length < 2) fail('--brokers: give a reference and at least one broker to compare with it')
  if (values.realtime) enableRealtime()
  const ctx = { profile, generatorCpus: values['generator-cpus'] }
  const log = (message: string): void => { process.stderr.write(`${message}\n`) }
  const loadBefore = loadavg()[0]
  const uptimeBefore = loadAverages()
  if (loadBefore > availableParallelism()) {
    log(`warning: load average ${loadBefore.toFixed(1)} on ${availableParallelism()} cores: other processes will take turns on the pinned cores, `
      + 'so rates are low and noisy; the CPU-per-message cross-check printed after the table holds up better')
  }
  const started = Date.now()

  const records: RunRecord[] = []
  for (let run = 0; run < profile.runs; run++) {
    // Alternate the order so that neither setup always runs first on a machine whose load drifts.
    const order = run % 2 === 0 ? setups : [...setups].reverse()
    for (const scenario of scenarios) {
      for (const setup of order) {
        const broker = await setup.start(values['broker-cpus'])
        try {
          const result = await scenario.run(broker, ctx)
          records.push({ scenario: scenario.id, broker: setup.id, run: run + 1, ...result })
          const shown = Object.entries(result.metrics).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(' ')
          log(`run ${run + 1}/${profile.runs} ${scenario.id.padEnd(16)} ${setup.id.padEnd(10)} ${shown}`
            + `${result.brokerCpuMicrosPerMessage === undefined ? '' : ` ${result.brokerCpuMicrosPerMessage.toFixed(2)} µs/msg`}`
            + ` (received ${result.received}/${result.expected}, broker CPU ${result.brokerCpuPercent.toFixed(0)}%`
            + `${result.brokerWaitPercent === undefined ? '' : `, broker waited for its core ${result.brokerWaitPercent.toFixed(0)}%`}`
            + `${result.generatorCpuPercent === undefined ? '' : `, generator CPU ${result.generatorCpuPercent.toFixed(0)}%`}`
            + `${result.generatorCoreBusyPercent === undefined ? '' : `, generator's core busy ${result.generatorCoreBusyPercent.toFixed(0)}%`}; load ${loadAverages()})`
            + `${result.invalid === undefined ? '' : ` INVALID: ${result.invalid}`}`)
        } finally {
          await broker.stop()
        }
      }
    }
  }

  const rows = scenarios.flatMap((s) => s.metrics.map((m) => rowFor(m, setups, records)))
  const incomplete = records.filter((r) => r.received !== r.expected)
  const summary = {
    profile,
    brokers: setups.map((s) => ({ id: s.id, label: s.label })),
    brokerCpus: values['broker-cpus'],
    generatorCpus: values['generator-cpus'],
    realtime: values.realtime,
    loadAverage: { before: loadBefore, after: loadavg()[0] },
    uptime: { before: uptimeBefore, after: loadAverages() },
    seconds: (Date.now() - started) / 1000,
    rows,
    runs: records,
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
  } else {
    process.stdout.write(`${table(rows, setups)}\n\n`)
    if (rows.some((r) => r.invalid.length)) {
      process.stdout.write('* no run of this setup measured the broker (generator\'s core above 70 % busy, or broker below 90 % of its own): '
        + 'the median of all its runs is shown and no target is judged; CPU per message still compares the brokers\n')
    }
    process.stdout.write(`${profile.runs} run(s) per scenario and broker, medians; brokers on CPU ${summary.brokerCpus}, generator on CPU ${summary.generatorCpus}`
      + `${values.realtime ? ' (broker main threads SCHED_FIFO: --realtime)' : ''}; `
      + `load average (1, 5, 15 min) ${uptimeBefore} → ${summary.uptime.after}; ${summary.seconds.toFixed(0)} s\n`)
  }
  if (incomplete.length) {
    for (const r of incomplete) log(`warning: ${r.scenario} on ${r.broker} (run ${r.run}): received ${r.received} of ${r.expected}`)
    process.exitCode = 1
  }
}

await main()
