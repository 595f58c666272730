import { parseArgs } from 'node:util'
import { availableParallelism, loadavg } from 'node:os'
import { BROKER_SETUPS, enableRealtime, openFilesLimit, type BrokerSetup } from './brokers.js'
import { PROFILES, SCENARIOS, type Metric, type Scenario, type ScenarioRun, type Target } from './scenarios.js'

/*
 * `npm run bench`: every scenario against every broker setup in the same run, every broker process
 * (both nodes and Redis for the cluster) pinned to the broker cores and the load generator to
 * another, each scenario several times with fresh brokers (setups alternate in order between
 * runs, so drift on a shared machine hits all), and the medians compared with the first setup,
 * the reference, against each setup's own targets.
 */

const USAGE = `usage: npm run bench -- [--quick] [--json] [--runs N] [--only SCENARIO,…] [--brokers ID,…]
  --quick          one short run of each scenario (about a minute), for a smoke test
  --json           print the results as JSON instead of a table
  --runs N         runs of each scenario per broker (default 3; median reported)
  --only IDS       scenarios to run: ${SCENARIOS.map((s) => s.id).join(', ')}
  --brokers IDS    broker setups, the first being the reference: ${BROKER_SETUPS.map((b) => b.id).join(', ')}
  --broker-cpus C  cores for the brokers (taskset list, default 0)
  --generator-cpus C  cores for the load generator (default 1)
  --realtime       run the main thread of every broker and generator process SCHED_FIFO (needs root
                   or CAP_SYS_NICE): a diagnostic for a busy machine, where other processes would
                   otherwise take the pinned cores; the targets are judged without it`

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
  /** Median per broker setup. */
  readonly medians: Readonly<Record<string, number>>
  readonly runs: Readonly<Record<string, readonly number[]>>
  /** Candidate ÷ reference, per candidate setup. */
  readonly ratios: Readonly<Record<string, number>>
  /** Each candidate's target, described (`—` without one). */
  readonly targets: Readonly<Record<string, string>>
  /** Whether each candidate meets its target (absent without a target). */
  readonly met: Readonly<Record<string, boolean>>
}

function rowFor(metric: Metric, setups: readonly BrokerSetup[], records: readonly RunRecord[]): Row {
  const runs: Record<string, number[]> = {}
  const medians: Record<string, number> = {}
  for (const setup of setups) {
    runs[setup.id] = records.filter((r) => r.broker === setup.id && metric.id in r.metrics).map((r) => r.metrics[metric.id])
    medians[setup.id] = median(runs[setup.id])
  }
  const [reference, ...candidates] = setups
  const ratios: Record<string, number> = {}
  const targets: Record<string, string> = {}
  const met: Record<string, boolean> = {}
  for (const candidate of candidates) {
    ratios[candidate.id] = medians[candidate.id] / medians[reference.id]
    const target = metric.targets?.[candidate.id]
    targets[candidate.id] = describeTarget(target, metric.unit)
    if (target) met[candidate.id] = meets(target, target.kind === 'ratio' ? ratios[candidate.id] : medians[candidate.id])
  }
  return { metric: metric.id, label: metric.label, unit: metric.unit, medians, runs, ratios, targets, met }
}

interface CpuCostRow {
  readonly metric: string
  readonly label: string
  /** Median broker CPU µs per delivered message, per setup. */
  readonly medians: Readonly<Record<string, number>>
  /** Reference ÷ candidate: comparable with the throughput ratio. */
  readonly ratios: Readonly<Record<string, number>>
}

function cpuCostRows(scenarios: readonly Scenario[], setups: readonly BrokerSetup[], records: readonly RunRecord[]): CpuCostRow[] {
  const [reference, ...candidates] = setups
  return scenarios.flatMap((scenario) => {
    const costs = (setup: BrokerSetup): number[] => records
      .filter((r) => r.scenario === scenario.id && r.broker === setup.id && r.brokerCpuMicrosPerMessage !== undefined)
      .map((r) => r.brokerCpuMicrosPerMessage as number)
    if (costs(reference).length === 0) return []
    const medians = Object.fromEntries(setups.map((s) => [s.id, median(costs(s))]))
    const ratios = Object.fromEntries(candidates.map((c) => [c.id, medians[reference.id] / medians[c.id]]))
    return [{ metric: scenario.metrics[0].id, label: scenario.metrics[0].label, medians, ratios }]
  })
}

function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return 'n/a'
  if (unit === 'msg/s') return `${Math.round(value).toLocaleString('en')} ${unit}`
  return `${value.toFixed(value < 10 ? 2 : 1)} ${unit}`
}

/** One column group per candidate (its value, ratio to the reference, its target, met?), after the reference's value. */
function table(rows: readonly Row[], setups: readonly BrokerSetup[]): string {
  const [reference, ...candidates] = setups
  const header = ['scenario', reference.label, ...candidates.flatMap((c) => [c.label, 'ratio', 'target', 'met?'])]
  const body = rows.map((row) => [
    row.label,
    formatValue(row.medians[reference.id], row.unit),
    ...candidates.flatMap((c) => [
      formatValue(row.medians[c.id], row.unit),
      `${row.ratios[c.id].toFixed(2)}×`,
      row.targets[c.id],
      c.id in row.met ? (row.met[c.id] ? 'yes' : 'NO') : '—',
    ]),
  ])
  const widths = header.map((_, i) => Math.max(...[header, ...body].map((cells) => cells[i].length)))
  const line = (cells: readonly string[]): string => `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join(' | ')} |`
  return [line(header), `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line)].join('\n')
}

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
  const scenarios: Scenario[] = pick(SCENARIOS, values.only, '--only')
  const setups: BrokerSetup[] = pick(BROKER_SETUPS, values.brokers, '--brokers')
  if (setups.length < 2) fail('--brokers: give a reference and at least one broker to compare with it')
  if (values.realtime) enableRealtime()
  const ctx = { profile, generatorCpus: values['generator-cpus'] }
  const log = (message: string): void => { process.stderr.write(`${message}\n`) }
  const loadBefore = loadavg()[0]
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
          log(`run ${run + 1}/${profile.runs} ${scenario.id.padEnd(12)} ${setup.id.padEnd(10)} ${shown} (received ${result.received}/${result.expected}, broker CPU ${result.brokerCpuPercent.toFixed(0)}%`
            + `${result.brokerWaitPercent === undefined ? '' : `, broker waited for its core ${result.brokerWaitPercent.toFixed(0)}%`}`
            + `${result.generatorCpuPercent === undefined ? '' : `, generator CPU ${result.generatorCpuPercent.toFixed(0)}%`})`)
        } finally {
          await broker.stop()
        }
      }
    }
  }

  const rows = scenarios.flatMap((s) => s.metrics.map((m) => rowFor(m, setups, records)))
  const cpuCost = cpuCostRows(scenarios, setups, records)
  const incomplete = records.filter((r) => r.received !== r.expected)
  const summary = {
    profile,
    brokers: setups.map((s) => ({ id: s.id, label: s.label })),
    brokerCpus: values['broker-cpus'],
    generatorCpus: values['generator-cpus'],
    realtime: values.realtime,
    loadAverage: { before: loadBefore, after: loadavg()[0] },
    seconds: (Date.now() - started) / 1000,
    rows,
    cpuCost,
    runs: records,
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`)
  } else {
    process.stdout.write(`${table(rows, setups)}\n\n`)
    if (cpuCost.length) {
      process.stdout.write('Cross-check unaffected by other processes on the broker core — broker CPU per delivered message (ratio = reference ÷ candidate, so ≥ 1 means cheaper):\n')
      for (const cost of cpuCost) {
        const values = setups.map((s) => `${s.label} ${cost.medians[s.id].toFixed(2)} µs`).join(', ')
        const ratios = Object.values(cost.ratios).map((r) => `${r.toFixed(2)}×`).join(', ')
        process.stdout.write(`  ${cost.label}: ${values} → ${ratios}\n`)
      }
      process.stdout.write('\n')
    }
    process.stdout.write(`${profile.runs} run(s) per scenario and broker, medians; brokers on CPU ${summary.brokerCpus}, generator on CPU ${summary.generatorCpus}`
      + `${values.realtime ? ' (main threads SCHED_FIFO: --realtime)' : ''}; `
      + `load average ${loadBefore.toFixed(2)} → ${summary.loadAverage.after.toFixed(2)}; ${summary.seconds.toFixed(0)} s\n`)
  }
  if (incomplete.length) {
    for (const r of incomplete) log(`warning: ${r.scenario} on ${r.broker} (run ${r.run}): received ${r.received} of ${r.expected}`)
    process.exitCode = 1
  }
}

await main()
