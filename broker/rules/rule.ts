import { topicMatches } from '../mqtt/topic.js'
import { FUNCTIONS, RuleEvalError, toText } from './functions.js'
import { parseRule, RuleSyntaxError, type Expr, type Position, type RuleAst } from './sql.js'

/*
 * A rule compiled from its SQL: which messages and events it takes (FROM), whether one passes
 * (WHERE) and what it produces (SELECT). Names are checked here, once: an unknown function, a
 * wrong argument count, an unknown field or event, a malformed topic filter is refused with its
 * position, like a syntax error.
 */

/** Client events a rule can take with `FROM "$events/<name>"`. */
export const EVENTS = ['client_connected', 'client_disconnected', 'session_subscribed'] as const
export type RuleEvent = (typeof EVENTS)[number]
/** Named by EMQX and by our issue, not built yet: refused with a clear message. */
const PLANNED_EVENTS = ['message_delivered', 'message_acked', 'message_dropped']
export const EVENT_PREFIX = '$events/'

/** What a rule sees of a message or an event. `payload` is the raw bytes (or text). */
export interface RuleInput {
  readonly clientid?: string
  readonly username?: string
  readonly topic?: string
  readonly qos?: number
  readonly retain?: boolean
  readonly payload?: Buffer | string
  /** Milliseconds since the epoch, when the node received it. */
  readonly timestamp: number
  /** The id of the node that received it. */
  readonly node: string
  readonly peerhost?: string
  /** `message`, or the event's name (`client_connected` …). */
  readonly event: string
}

/** The fields a rule may name; `payload.x.y` reads into a JSON payload. */
export const FIELDS = ['clientid', 'username', 'topic', 'qos', 'retain', 'payload', 'timestamp', 'node', 'peerhost', 'event'] as const

export type RuleOutput = Record<string, unknown>

export interface CompiledRule {
  readonly sql: string
  /** Topic filters of FROM. */
  readonly filters: readonly string[]
  /** Events of FROM. */
  readonly events: readonly RuleEvent[]
  /** True when a message on `topic` goes through this rule. */
  matchesTopic(topic: string): boolean
  /** The SELECT output, or `undefined` when WHERE is not true. Throws `RuleEvalError`. */
  apply(input: RuleInput): RuleOutput | undefined
}

/** [MQTT-4.7.1-1] '#' only as the last whole level, [MQTT-4.7.1-2] '+' only as a whole level. */
const validFilter = (filter: string): boolean =>
  filter.length > 0 && filter.split('/').every((level, i, all) => (level === '#' ? i === all.length - 1 : level === '+' || !/[#+]/.test(level)))

function checkSources(ast: RuleAst): { filters: string[]; events: RuleEvent[] } {
  const filters: string[] = []
  const events: RuleEvent[] = []
  for (const { text, at } of ast.sources) {
    if (text.startsWith(EVENT_PREFIX)) {
      const name = text.slice(EVENT_PREFIX.length)
      if (!(EVENTS as readonly string[]).includes(name)) {
        const planned = PLANNED_EVENTS.includes(name) ? ` (${text} is not built yet)` : ''
        throw new RuleSyntaxError(at, `one of ${EVENTS.map((e) => `"${EVENT_PREFIX}${e}"`).join(', ')}${planned}`, `"${text}"`)
      }
      events.push(name as RuleEvent)
    } else {
      if (!validFilter(text)) throw new RuleSyntaxError(at, "a topic filter with '+' and '#' only as whole levels and '#' only last (devices/+/telemetry)", `"${text}"`)
      filters.push(text)
    }
  }
  return { filters, events }
}

/** Walks every expression: calls name known functions with a fitting count, paths known fields or aliases. */
function checkNames(ast: RuleAst): void {
  const aliases = new Set(ast.fields.filter((f) => !(f.expr.kind === 'path' && f.name[0] === f.expr.root)).map((f) => f.name[0]))
  const visit = (expr: Expr, inWhere: boolean): void => {
    switch (expr.kind) {
      case 'literal':
        return
      case 'path':
        if (!(FIELDS as readonly string[]).includes(expr.root) && !(inWhere && aliases.has(expr.root))) {
          throw new RuleSyntaxError(expr.at, `a field (${FIELDS.join(', ')})${inWhere && aliases.size ? ` or an alias (${[...aliases].join(', ')})` : ''}`, `'${expr.root}'`)
        }
        if (expr.root !== 'payload' && expr.steps.length > 0 && !aliases.has(expr.root)) {
          throw new RuleSyntaxError(expr.at, `a field without '.' or '[' after it (only payload has inner fields)`, `'${expr.root}.'`)
        }
        return
      case 'call': {
        const spec = FUNCTIONS[expr.name]
        if (!spec) throw new RuleSyntaxError(expr.at, `a known function (${Object.keys(FUNCTIONS).join(', ')})`, `'${expr.name}'`)
        if (expr.args.length < spec.min || expr.args.length > spec.max) {
          const wanted = spec.min === spec.max ? `${spec.min}` : spec.max === Infinity ? `at least ${spec.min}` : `${spec.min} to ${spec.max}`
          throw new RuleSyntaxError(expr.at, `${wanted} argument${wanted === '1' ? '' : 's'} for ${expr.name}`, `${expr.args.length}`)
        }
        for (const arg of expr.args) visit(arg, inWhere)
        return
      }
      case 'unary':
        return visit(expr.operand, inWhere)
      case 'binary':
        visit(expr.left, inWhere)
        return visit(expr.right, inWhere)
      case 'in':
        visit(expr.operand, inWhere)
        for (const item of expr.list) visit(item, inWhere)
        return
      case 'case':
        if (expr.subject) visit(expr.subject, inWhere)
        for (const branch of expr.branches) {
          visit(branch.when, inWhere)
          visit(branch.then, inWhere)
        }
        if (expr.otherwise) visit(expr.otherwise, inWhere)
    }
  }
  for (const field of ast.fields) visit(field.expr, false)
  if (ast.where) visit(ast.where, true)
}

/** Compiles `sql`; throws `RuleSyntaxError` with the position of the first problem. */
export function compileRule(sql: string): CompiledRule {
  const ast = parseRule(sql)
  const { filters, events } = checkSources(ast)
  checkNames(ast)
  const aliasFields = new Map(ast.fields.map((f) => [f.name[0], f]))
  return {
    sql,
    filters,
    events,
    matchesTopic: (topic) => filters.some((filter) => topicMatches(filter, topic)),
    apply(input) {
      const scope = new Scope(input, aliasFields)
      if (ast.where && evaluate(ast.where, scope) !== true) return undefined
      if (ast.all) return everyField(input)
      const output: RuleOutput = {}
      for (const field of ast.fields) setPath(output, field.name, scope.selected(field.name[0], field.expr))
      return output
    },
  }
}

function everyField(input: RuleInput): RuleOutput {
  const output: RuleOutput = {}
  for (const name of FIELDS) {
    const value = name === 'payload' ? payloadText(input.payload) : input[name]
    if (value !== undefined) output[name] = value
  }
  return output
}

function setPath(target: RuleOutput, path: readonly string[], value: unknown): void {
  if (value === undefined) return
  let node = target
  for (const step of path.slice(0, -1)) {
    const next = node[step]
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[step] = {}
    node = node[step] as RuleOutput
  }
  node[path[path.length - 1]] = value
}

const payloadText = (payload: Buffer | string | undefined): string | undefined =>
  payload === undefined ? undefined : typeof payload === 'string' ? payload : payload.toString('utf8')

const NOT_JSON = Symbol('not JSON')

/** One evaluation: the payload decoded at most once, each selected field evaluated at most once. */
class Scope {
  private decoded: unknown = undefined
  private decodedOnce = false
  private readonly values = new Map<string, unknown>()
  constructor(readonly input: RuleInput, private readonly fields: ReadonlyMap<string, { expr: Expr }>) {}

  /** The payload as JSON, or NOT_JSON. */
  json(): unknown {
    if (!this.decodedOnce) {
      this.decodedOnce = true
      try {
        this.decoded = JSON.parse(payloadText(this.input.payload) ?? '') as unknown
      } catch {
        this.decoded = NOT_JSON
      }
    }
    return this.decoded
  }

  selected(name: string, expr: Expr): unknown {
    if (!this.values.has(name)) this.values.set(name, evaluate(expr, this))
    return this.values.get(name)
  }

  root(name: string): unknown {
    if ((FIELDS as readonly string[]).includes(name)) return name === 'payload' ? payloadText(this.input.payload) : this.input[name as keyof RuleInput]
    const field = this.fields.get(name)
    return field ? this.selected(name, field.expr) : undefined
  }
}

function step(value: unknown, key: string | number): unknown {
  if (typeof key === 'number') return Array.isArray(value) ? value[key - 1] : undefined
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  return Object.hasOwn(value, key) ? (value as Record<string, unknown>)[key] : undefined
}

function readPath(expr: Extract<Expr, { kind: 'path' }>, scope: Scope): unknown {
  let value: unknown
  if (expr.root === 'payload' && expr.steps.length > 0) {
    value = scope.json()
    if (value === NOT_JSON) return undefined
  } else {
    value = scope.root(expr.root)
  }
  for (const key of expr.steps) {
    value = step(value, key)
    if (value === undefined) return undefined
  }
  return value
}

/** A number from a number or a numeric string (payload fields often arrive as text). */
function asNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return value
  if (typeof value === 'string' && value.trim() !== '') {
    const n = Number(value)
    if (Number.isFinite(n)) return n
  }
  return undefined
}

/** -1, 0, 1, or undefined when the two cannot be ordered (a missing field compares as nothing). */
function compare(a: unknown, b: unknown): number | undefined {
  if (a === undefined || b === undefined || a === null || b === null) return undefined
  if (typeof a === 'number' || typeof b === 'number') {
    const x = asNumber(a)
    const y = asNumber(b)
    if (x === undefined || y === undefined) return undefined
    return x < y ? -1 : x > y ? 1 : 0
  }
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0
  return undefined
}

function equal(a: unknown, b: unknown): boolean {
  if (a === null || b === null) return a === b
  if (typeof a === 'boolean' || typeof b === 'boolean') return a === b
  if (typeof a === 'object' || typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b)
  return compare(a, b) === 0
}

function arithmetic(op: string, a: unknown, b: unknown): unknown {
  // '+' joins two strings, or a string that is not a number with any other value.
  if (op === '+' && a !== undefined && b !== undefined) {
    if (typeof a === 'string' && typeof b === 'string') return a + b
    if ((typeof a === 'string' && asNumber(a) === undefined) || (typeof b === 'string' && asNumber(b) === undefined)) return toText(a) + toText(b)
  }
  const x = asNumber(a)
  const y = asNumber(b)
  if (x === undefined || y === undefined) {
    const bad = x === undefined ? a : b
    throw new RuleEvalError(`'${op}' needs numbers, got ${bad === undefined ? 'a missing field' : JSON.stringify(bad)}`)
  }
  switch (op) {
    case '+': return x + y
    case '-': return x - y
    case '*': return x * y
    case '/':
      if (y === 0) throw new RuleEvalError('division by zero')
      return x / y
    case 'div':
      if (y === 0) throw new RuleEvalError('division by zero')
      return Math.trunc(x / y)
    default:
      if (y === 0) throw new RuleEvalError('division by zero')
      return x % y
  }
}

function evaluate(expr: Expr, scope: Scope): unknown {
  switch (expr.kind) {
    case 'literal':
      return expr.value
    case 'path':
      return readPath(expr, scope)
    case 'call': {
      const args = expr.args.map((arg) => evaluate(arg, scope))
      return FUNCTIONS[expr.name].fn(...args)
    }
    case 'unary': {
      const value = evaluate(expr.operand, scope)
      if (expr.op === 'not') return value !== true
      const n = asNumber(value)
      if (n === undefined) throw new RuleEvalError(`'-' needs a number, got ${value === undefined ? 'a missing field' : JSON.stringify(value)}`)
      return -n
    }
    case 'binary': {
      if (expr.op === 'and') return evaluate(expr.left, scope) === true && evaluate(expr.right, scope) === true
      if (expr.op === 'or') return evaluate(expr.left, scope) === true || evaluate(expr.right, scope) === true
      const left = evaluate(expr.left, scope)
      const right = evaluate(expr.right, scope)
      switch (expr.op) {
        case '=': return equal(left, right)
        case '!=': return left !== undefined && right !== undefined && !equal(left, right)
        case '<': return (compare(left, right) ?? 0) < 0
        case '<=': return [-1, 0].includes(compare(left, right) ?? 1)
        case '>': return (compare(left, right) ?? 0) > 0
        case '>=': return [1, 0].includes(compare(left, right) ?? -1)
        default: return arithmetic(expr.op, left, right)
      }
    }
    case 'in': {
      const value = evaluate(expr.operand, scope)
      const found = expr.list.some((item) => equal(value, evaluate(item, scope)))
      return value !== undefined && found !== expr.negated
    }
    case 'case': {
      const subject = expr.subject ? evaluate(expr.subject, scope) : undefined
      for (const branch of expr.branches) {
        const when = evaluate(branch.when, scope)
        if (expr.subject ? equal(subject, when) : when === true) return evaluate(branch.then, scope)
      }
      return expr.otherwise ? evaluate(expr.otherwise, scope) : undefined
    }
  }
}

export type { Position }
export { RuleEvalError, RuleSyntaxError }
