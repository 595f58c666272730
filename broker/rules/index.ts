import { join } from 'node:path'
import type { Aedes, AedesPublishPacket, Client, Subscription } from 'aedes'
import type { Registry } from 'prom-client'
import type { Config, KafkaActionConfig, RepublishActionConfig, RuleActionConfig } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { clientAddress, clientIdentity } from '../auth/identity.js'
import type { KafkaRecord } from './kafka.js'
import { createKafkaConnector, type KafkaConnector } from './kafka-connector.js'
import { registerRuleMetrics, type RuleStats } from './metrics.js'
import { ActionQueue, type Sink } from './queue.js'
import { SpillLog } from './spill.js'
import { compileRule, RuleEvalError, type CompiledRule, type RuleEvent, type RuleInput, type RuleOutput } from './rule.js'
import { compileTemplate, type Template } from './template.js'

/*
 * The rules feature: each message a client publishes to this node goes through the rules whose
 * FROM matches its topic, and each output goes to the rule's actions' queues. Only messages from
 * this node's own clients are taken (the `published` hook runs where the message arrived, with its
 * client): a message fanned out from another node is that node's to process, so a cluster sends
 * each message to a sink once. Messages the broker publishes itself ($SYS, republished outputs) are
 * not taken, so a republish cannot loop.
 *
 * Client events (`FROM "$events/client_connected"` …) come from aedes' events on this node.
 */

interface Action {
  readonly name: string
  readonly type: RuleActionConfig['type']
  readonly queue: ActionQueue<unknown>
  /** Turns an output into what the sink takes. */
  readonly render: (output: RuleOutput) => unknown
}

interface ActiveRule {
  readonly id: string
  readonly rule: CompiledRule
  readonly actions: readonly Action[]
  readonly stats: RuleStats
}

export interface RulesEngine {
  readonly feature: Feature
  /** Before the listeners open: republish publishes on `aedes`, events come from it. */
  attach(aedes: Aedes): void
}

const asJson = (output: RuleOutput): string => JSON.stringify(output)

/** The payload of an action: its template, or the output as JSON. */
const payloadOf = (template: string | undefined): ((output: RuleOutput) => string) => (template ? compileTemplate(template) : asJson)

function republishSink(target: () => Aedes | undefined): Sink<{ topic: string; payload: string; qos: 0 | 1 | 2; retain: boolean }> {
  return {
    async send(batch) {
      const aedes = target()
      if (!aedes) throw new Error('the broker is not started yet')
      for (const message of batch) {
        await new Promise<void>((resolve, reject) => {
          aedes.publish({ cmd: 'publish', topic: message.topic, payload: Buffer.from(message.payload), qos: message.qos, retain: message.retain, dup: false }, (err) => (err ? reject(err) : resolve()))
        })
      }
    },
    close: async () => {},
  }
}

export function createRules(config: Config, log: Logger, registry: Registry, nodeId: () => string): RulesEngine | undefined {
  if (config.rules.length === 0) return undefined
  let aedes: Aedes | undefined
  const connectors = new Map<string, KafkaConnector>()
  const connector = (name: string): KafkaConnector => {
    let existing = connectors.get(name)
    if (!existing) {
      existing = createKafkaConnector(name, config.connectors[name], log)
      connectors.set(name, existing)
    }
    return existing
  }
  const allActions: Action[] = []
  const metricsSource = { rules: [] as ActiveRule[], actions: [] as { name: string; type: string; stats: ActionQueue<unknown>['stats']; spill?: SpillLog['stats'] }[] }
  const spills = new Map<string, SpillLog>()
  /** The action's spill log in `<dataDir>/actions/<name>/`; none with maxDiskBytes 0. */
  const spillOf = (name: string, settings: RuleActionConfig): SpillLog | undefined => {
    if (settings.maxDiskBytes === 0) return undefined
    const spill = new SpillLog(join(config.dataDir, 'actions', name), { maxDiskBytes: settings.maxDiskBytes, fsync: settings.fsync }, log, name)
    spills.set(name, spill)
    return spill
  }
  const metrics = registerRuleMetrics(registry, metricsSource)

  const makeAction = (ruleId: string, index: number, settings: RuleActionConfig): Action => {
    const name = `${ruleId}.${index + 1}`
    const queueSettings = { maxQueued: settings.maxQueued, maxBatch: settings.maxBatch, initialBackoffMs: settings.initialBackoff, maxBackoffMs: settings.maxBackoff }
    const onSent = metrics.latency(name, settings.type)
    if (settings.type === 'kafka') {
      const kafka: KafkaActionConfig = settings
      const topic = compileTemplate(kafka.topic)
      const key: Template | undefined = kafka.key ? compileTemplate(kafka.key) : undefined
      const value = payloadOf(kafka.payload)
      const headers = Object.entries(kafka.headers).map(([header, template]) => [header, compileTemplate(template)] as const)
      const render = (output: RuleOutput): KafkaRecord => ({
        topic: topic(output),
        key: key ? key(output) : null,
        value: value(output),
        headers: Object.fromEntries(headers.map(([header, template]) => [header, template(output)])),
      })
      return { name, type: 'kafka', render, queue: new ActionQueue<unknown>(name, connector(kafka.connector).sink() as Sink<unknown>, queueSettings, log, onSent, spillOf(name, settings)) }
    }
    const republish: RepublishActionConfig = settings
    const topic = compileTemplate(republish.topic)
    const payload = payloadOf(republish.payload)
    const render = (output: RuleOutput) => ({ topic: topic(output), payload: payload(output), qos: republish.qos, retain: republish.retain })
    return { name, type: 'republish', render, queue: new ActionQueue<unknown>(name, republishSink(() => aedes) as Sink<unknown>, queueSettings, log, onSent, spillOf(name, settings)) }
  }

  const rules: ActiveRule[] = config.rules.filter((r) => r.enabled).map((settings) => {
    const actions = settings.actions.map((action, i) => makeAction(settings.id, i, action))
    allActions.push(...actions)
    return { id: settings.id, rule: compileRule(settings.sql), actions, stats: { matched: 0, passed: 0, failed: 0 } }
  })
  metricsSource.rules = rules
  metricsSource.actions = allActions.map((a) => ({ name: a.name, type: a.type, stats: a.queue.stats, spill: spills.get(a.name)?.stats }))
  const messageRules = rules.filter((r) => r.rule.filters.length > 0)
  const eventRules = (event: RuleEvent) => rules.filter((r) => r.rule.events.includes(event))

  /** Runs a rule; returns the spill log writes a QoS 1/2 PUBACK waits for, if any. */
  const run = (active: ActiveRule, input: RuleInput, durable?: Promise<void>[]): void => {
    active.stats.matched++
    let output: RuleOutput | undefined
    try {
      output = active.rule.apply(input)
    } catch (err) {
      if (!(err instanceof RuleEvalError)) throw err
      active.stats.failed++
      // The first failure and then one in a thousand: a rule failing on every message must not flood the log.
      if (active.stats.failed % 1000 === 1) log.warn({ rule: active.id, topic: input.topic, clientid: input.clientid, failed: active.stats.failed }, `rule ${active.id}: ${err.message} (${active.stats.failed} failed so far)`)
      return
    }
    if (output === undefined) return
    active.stats.passed++
    for (const action of active.actions) {
      action.queue.push(action.render(output))
      if (durable) {
        const persisted = action.queue.persisted()
        if (persisted && !durable.includes(persisted)) durable.push(persisted)
      }
    }
  }

  const clientFields = (client: Client) => ({
    clientid: client.id,
    username: clientIdentity(client)?.username,
    peerhost: clientAddress(client),
    node: nodeId(),
    timestamp: Date.now(),
  })

  const onEvent = (event: RuleEvent, client: Client | null | undefined, extra: Partial<RuleInput> = {}): void => {
    if (!client) return
    const matching = eventRules(event)
    if (matching.length === 0) return
    const input: RuleInput = { ...clientFields(client), event, ...extra }
    for (const active of matching) run(active, input)
  }

  const feature: Feature = {
    name: 'rules',
    published(packet: AedesPublishPacket, client: Client | null) {
      // Only messages from this node's clients: see the comment at the top.
      if (!client) return
      let input: RuleInput | undefined
      // A QoS 1/2 PUBACK waits until the outputs are in the spill logs (grouped writes): at least once from the PUBACK.
      const durable: Promise<void>[] | undefined = packet.qos > 0 ? [] : undefined
      for (const active of messageRules) {
        if (!active.rule.matchesTopic(packet.topic)) continue
        input ??= { ...clientFields(client), event: 'message', topic: packet.topic, qos: packet.qos, retain: packet.retain, payload: packet.payload as Buffer | string }
        run(active, input, durable)
      }
      if (durable && durable.length > 0) return durable.length === 1 ? durable[0] : Promise.all(durable).then(() => {})
    },
    async close() {
      // Each action gets the node's shutdown budget's third to hand over what it holds.
      const graceMs = (config.shutdownTimeout * 1000) / 3
      await Promise.all(allActions.map((action) => action.queue.close(graceMs)))
      await Promise.all([...connectors.values()].map((c) => c.close()))
    },
  }

  return {
    feature,
    attach(broker) {
      aedes = broker
      if (eventRules('client_connected').length) broker.on('client', (client) => onEvent('client_connected', client))
      if (eventRules('client_disconnected').length) broker.on('clientDisconnect', (client) => onEvent('client_disconnected', client))
      if (eventRules('session_subscribed').length) {
        broker.on('subscribe', (subscriptions: Subscription[], client: Client) => {
          for (const sub of subscriptions) onEvent('session_subscribed', client, { topic: sub.topic, qos: sub.qos })
        })
      }
    },
  }
}
