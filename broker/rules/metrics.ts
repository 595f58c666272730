import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { QueueStats } from './queue.js'
import type { SpillStats } from './spill.js'

/*
 * Per rule and per action metrics in /metrics. The hot path only adds to plain numbers in each
 * rule's and action's stats; the counters catch up when Prometheus scrapes. Latency is the time
 * from the message's arrival to the sink's acknowledgement.
 */

export interface RuleStats {
  matched: number
  passed: number
  failed: number
}

export interface RuleMetricsSource {
  readonly rules: readonly { readonly id: string; readonly stats: RuleStats }[]
  readonly actions: readonly { readonly name: string; readonly type: string; readonly stats: QueueStats; readonly spill?: SpillStats }[]
}

/** Milliseconds → seconds buckets from 1 ms to 30 s: a healthy sink answers in milliseconds, a recovering one in seconds. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

function counter<K>(registry: Registry, name: string, help: string, label: 'rule' | 'action', items: () => readonly K[], labelOf: (item: K) => Record<string, string>, read: (item: K) => number): void {
  const reported = new Map<string, number>()
  new Counter({
    name,
    help,
    labelNames: label === 'rule' ? ['rule'] : ['action', 'type'],
    registers: [registry],
    collect() {
      for (const item of items()) {
        const labels = labelOf(item)
        const key = JSON.stringify(labels)
        const now = read(item)
        this.labels(labels).inc(now - (reported.get(key) ?? 0))
        reported.set(key, now)
      }
    },
  })
}

export interface RuleMetrics {
  /** Records one acknowledged message's time in the queue. */
  latency(action: string, type: string): (ms: number) => void
}

export function registerRuleMetrics(registry: Registry, source: RuleMetricsSource): RuleMetrics {
  const ruleLabel = (rule: { id: string }) => ({ rule: rule.id })
  counter(registry, 'fleetmq_rule_matched_total', 'messages whose topic a rule\'s FROM matched', 'rule', () => source.rules, ruleLabel, (r) => r.stats.matched)
  counter(registry, 'fleetmq_rule_passed_total', 'messages that passed a rule\'s WHERE and went to its actions', 'rule', () => source.rules, ruleLabel, (r) => r.stats.passed)
  counter(registry, 'fleetmq_rule_failed_total', 'messages a rule could not evaluate (a function or operator refused a value: logged)', 'rule', () => source.rules, ruleLabel, (r) => r.stats.failed)
  const actionLabel = (a: { name: string; type: string }) => ({ action: a.name, type: a.type })
  counter(registry, 'fleetmq_action_sent_total', 'messages an action\'s sink acknowledged', 'action', () => source.actions, actionLabel, (a) => a.stats.sent)
  counter(registry, 'fleetmq_action_failed_total', 'send attempts an action\'s sink refused or did not answer (each retried with backoff)', 'action', () => source.actions, actionLabel, (a) => a.stats.failed)
  const reportedDrops = new Map<string, number>()
  new Counter({
    name: 'fleetmq_action_dropped_total',
    help: 'messages an action dropped, by reason: disk_full (the spill log past maxDiskBytes: its oldest segment goes), memory_full (maxDiskBytes 0 and maxQueued reached: the oldest goes), shutdown (memory only, left when the node stopped)',
    labelNames: ['action', 'type', 'reason'],
    registers: [registry],
    collect() {
      for (const action of source.actions) {
        for (const [reason, now] of Object.entries(action.stats.droppedBy)) {
          const labels = { ...actionLabel(action), reason }
          const key = JSON.stringify(labels)
          this.labels(labels).inc(now - (reportedDrops.get(key) ?? 0))
          reportedDrops.set(key, now)
        }
      }
    },
  })
  new Gauge({
    name: 'fleetmq_action_spilled_bytes',
    help: 'bytes in an action\'s spill log on disk',
    labelNames: ['action', 'type'],
    registers: [registry],
    collect() {
      for (const action of source.actions) if (action.spill) this.labels(actionLabel(action)).set(action.spill.bytes)
    },
  })
  new Gauge({
    name: 'fleetmq_action_spilled_messages',
    help: 'messages an action holds on disk only (past maxQueued in memory, or from before a restart), not read back yet',
    labelNames: ['action', 'type'],
    registers: [registry],
    collect() {
      for (const action of source.actions) if (action.spill) this.labels(actionLabel(action)).set(action.spill.unread)
    },
  })
  new Gauge({
    name: 'fleetmq_action_queued',
    help: 'messages waiting in an action\'s buffer or in flight to its sink',
    labelNames: ['action', 'type'],
    registers: [registry],
    collect() {
      for (const action of source.actions) this.labels(actionLabel(action)).set(action.stats.queued)
    },
  })
  new Gauge({
    name: 'fleetmq_action_failing',
    help: '1 while an action\'s sink refuses its messages (an alarm: the messages wait in its buffer), else 0',
    labelNames: ['action', 'type'],
    registers: [registry],
    collect() {
      for (const action of source.actions) this.labels(actionLabel(action)).set(action.stats.failing ? 1 : 0)
    },
  })
  const latency = new Histogram({
    name: 'fleetmq_action_latency_seconds',
    help: 'time from a message\'s arrival at the node to its sink\'s acknowledgement',
    labelNames: ['action', 'type'],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  })
  return {
    latency(action, type) {
      const child = latency.labels({ action, type })
      return (ms) => child.observe(ms / 1000)
    },
  }
}
