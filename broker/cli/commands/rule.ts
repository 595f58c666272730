import { Command, InvalidArgumentError } from 'commander'
import { FleetmqError } from '../../errors.js'
import { compileRule, RuleEvalError, RuleSyntaxError, type CompiledRule, type RuleInput } from '../../rules/rule.js'
import { printData } from '../output.js'

/*
 * `fleetmq rule test`: runs a rule on one sample message, without a broker, and prints what its
 * actions would receive. A rule that does not compile is refused with its line:column, the line
 * and a caret under the spot.
 */

export interface RuleTestResult {
  /** The topic matched a filter of FROM. */
  readonly matched: boolean
  /** WHERE was true (or absent). */
  readonly passed: boolean
  /** The SELECT output, when it passed. */
  readonly output?: Record<string, unknown>
}

/** The SQL's line with a caret under the column, for a terminal. */
export function pointAt(sql: string, err: RuleSyntaxError): string {
  const line = sql.split('\n')[err.position.line - 1] ?? ''
  return `${line}\n${' '.repeat(Math.max(0, err.position.column - 1))}^`
}

export function compileOrExplain(sql: string): CompiledRule {
  try {
    return compileRule(sql)
  } catch (err) {
    if (!(err instanceof RuleSyntaxError)) throw err
    throw new FleetmqError('RULE_INVALID', `the rule does not compile: ${err.message}`, pointAt(sql, err).split('\n'))
  }
}

/** A topic for the sample: --topic, or FROM's first filter when it has no wildcard. */
function sampleTopic(rule: CompiledRule, topic: string | undefined): string {
  if (topic !== undefined) return topic
  const plain = rule.filters.find((f) => !/[+#]/.test(f))
  if (plain === undefined) throw new FleetmqError('FLAG_INVALID', `FROM has only wildcard filters (${rule.filters.join(', ')}): give the sample's topic with --topic`)
  return plain
}

export function testRule(rule: CompiledRule, input: RuleInput): RuleTestResult {
  if (input.topic !== undefined && !rule.matchesTopic(input.topic)) return { matched: false, passed: false }
  try {
    const output = rule.apply(input)
    return output === undefined ? { matched: true, passed: false } : { matched: true, passed: true, output }
  } catch (err) {
    if (!(err instanceof RuleEvalError)) throw err
    throw new FleetmqError('RULE_INVALID', `the rule fails on this message: ${err.message}`)
  }
}

const qosOption = (value: string): 0 | 1 | 2 => {
  if (!['0', '1', '2'].includes(value)) throw new InvalidArgumentError(`expected 0, 1 or 2, got "${value}"`)
  return Number(value) as 0 | 1 | 2
}

interface TestOptions {
  sql: string
  payload: string
  topic?: string
  clientid: string
  username?: string
  qos: 0 | 1 | 2
  retain?: boolean
  peerhost: string
  json?: boolean
}

const testCommand = new Command('test')
  .description('run a rule on a sample message and print its output (no broker needed)')
  .requiredOption('--sql <sql>', 'the rule: SELECT … FROM "topic/filter" [WHERE …]')
  .option('--payload <text>', 'the message payload (JSON for payload.x paths)', '')
  .option('--topic <topic>', 'the message topic (default: FROM\'s first filter without wildcards)')
  .option('--clientid <id>', 'the publishing client\'s id', 'test-client')
  .option('--username <name>', 'the publishing client\'s username')
  .option('--qos <n>', 'the message QoS', qosOption, 0)
  .option('--retain', 'the message is retained')
  .option('--peerhost <address>', 'the client\'s address', '127.0.0.1')
  .option('--json', 'print the result as JSON')
  .action((options: TestOptions) => {
    const rule = compileOrExplain(options.sql)
    const input: RuleInput = {
      event: 'message',
      topic: sampleTopic(rule, options.topic),
      payload: options.payload,
      clientid: options.clientid,
      username: options.username,
      qos: options.qos,
      retain: options.retain === true,
      peerhost: options.peerhost,
      node: 'fleetmq-rule-test',
      timestamp: Date.now(),
    }
    const result = testRule(rule, input)
    printData(options, result, () => {
      if (!result.matched) return `no output: the topic ${input.topic} matches no filter of FROM (${rule.filters.join(', ')})`
      if (!result.passed) return 'no output: WHERE is not true for this message'
      return JSON.stringify(result.output, null, 2)
    })
  })

export const ruleCommand = new Command('rule').description('work with rules (docs/rules.md)').addCommand(testCommand)
