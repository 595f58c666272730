/*
 * The functions a rule may call (docs/rules.md lists them with examples). Names are matched
 * lower-case; the parser checks a call's name and argument count when the rule is compiled, so a
 * typo is refused at config check, never found on the first message.
 */

export class RuleEvalError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RuleEvalError'
  }
}

type Fn = (...args: unknown[]) => unknown

interface FunctionSpec {
  readonly min: number
  readonly max: number
  readonly fn: Fn
}

const typeName = (value: unknown): string => (value === null ? 'null' : value === undefined ? 'undefined' : Array.isArray(value) ? 'array' : typeof value)

function str(value: unknown, fn: string): string {
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  throw new RuleEvalError(`${fn}: expected a string, got ${typeName(value)}`)
}

function num(value: unknown, fn: string): number {
  if (typeof value === 'number') return value
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value)
  throw new RuleEvalError(`${fn}: expected a number, got ${typeName(value)}${typeof value === 'string' ? ` '${value}'` : ''}`)
}

/** The text form of a value: strings as they are, anything else as JSON. */
export function toText(value: unknown): string {
  if (typeof value === 'string') return value
  if (value === undefined) return ''
  return JSON.stringify(value)
}

const UNITS: Record<string, number> = { second: 1, millisecond: 1e3, microsecond: 1e6, nanosecond: 1e9 }

function unitOf(value: unknown, fn: string): number {
  const unit = UNITS[str(value, fn)]
  if (unit === undefined) throw new RuleEvalError(`${fn}: the unit must be one of ${Object.keys(UNITS).join(', ')}, got '${String(value)}'`)
  return unit
}

/** `Z`, `+08:00`, `-0530` → minutes east of UTC. */
function offsetMinutes(value: unknown, fn: string): number {
  const text = str(value, fn)
  if (text === 'Z' || text === 'z' || text === 'utc' || text === 'UTC') return 0
  const match = /^([+-])(\d{2}):?(\d{2})$/.exec(text)
  if (!match) throw new RuleEvalError(`${fn}: the offset must be Z or ±HH:MM (+08:00), got '${text}'`)
  const minutes = Number(match[2]) * 60 + Number(match[3])
  return match[1] === '-' ? -minutes : minutes
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0')

/** strftime-like: %Y %m %d %H %M %S, %N nanoseconds (9 digits), %3N milliseconds, %z +hhmm, %:z +hh:mm, %%. */
export function formatDate(unitValue: unknown, offsetValue: unknown, format: unknown, timestamp?: unknown): string {
  const unit = unitOf(unitValue, 'format_date')
  const offset = offsetMinutes(offsetValue, 'format_date')
  const pattern = str(format, 'format_date')
  const ms = timestamp === undefined ? Date.now() : (num(timestamp, 'format_date') * 1000) / unit
  const whole = Math.floor(ms)
  const shifted = new Date(whole + offset * 60_000)
  if (Number.isNaN(shifted.getTime())) throw new RuleEvalError(`format_date: ${String(timestamp)} is not a time in ${String(unitValue)}s`)
  const nanos = (((whole % 1000) + 1000) % 1000) * 1e6 + Math.round((ms - whole) * 1e6)
  const sign = offset < 0 ? '-' : '+'
  const abs = Math.abs(offset)
  return pattern.replace(/%(:z|3N|[YmdHMSNz%])/g, (_, spec: string) => {
    switch (spec) {
      case 'Y': return String(shifted.getUTCFullYear())
      case 'm': return pad(shifted.getUTCMonth() + 1)
      case 'd': return pad(shifted.getUTCDate())
      case 'H': return pad(shifted.getUTCHours())
      case 'M': return pad(shifted.getUTCMinutes())
      case 'S': return pad(shifted.getUTCSeconds())
      case 'N': return pad(Math.floor(nanos), 9)
      case '3N': return pad(Math.floor(nanos / 1e6), 3)
      case 'z': return `${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`
      case ':z': return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
      default: return '%'
    }
  })
}

export const FUNCTIONS: Readonly<Record<string, FunctionSpec>> = {
  // Strings
  upper: { min: 1, max: 1, fn: (s) => str(s, 'upper').toUpperCase() },
  lower: { min: 1, max: 1, fn: (s) => str(s, 'lower').toLowerCase() },
  concat: { min: 2, max: Infinity, fn: (...parts) => parts.map((p) => toText(p)).join('') },
  // EMQX's substr: from a 0-based start, to the end or for `length` characters.
  substr: {
    min: 2,
    max: 3,
    fn: (s, start, length) => {
      const text = str(s, 'substr')
      const from = num(start, 'substr')
      return length === undefined ? text.slice(from) : text.slice(from, from + num(length, 'substr'))
    },
  },
  trim: { min: 1, max: 1, fn: (s) => str(s, 'trim').trim() },
  replace: { min: 3, max: 3, fn: (s, search, replacement) => str(s, 'replace').split(str(search, 'replace')).join(str(replacement, 'replace')) },
  strlen: { min: 1, max: 1, fn: (s) => [...str(s, 'strlen')].length },
  // Conversions
  str: { min: 1, max: 1, fn: (v) => toText(v) },
  int: { min: 1, max: 1, fn: (v) => Math.trunc(num(v, 'int')) },
  float: { min: 1, max: 1, fn: (v) => num(v, 'float') },
  // Math
  abs: { min: 1, max: 1, fn: (n) => Math.abs(num(n, 'abs')) },
  round: {
    min: 1,
    max: 2,
    fn: (n, digits) => {
      const scale = 10 ** (digits === undefined ? 0 : num(digits, 'round'))
      return Math.round(num(n, 'round') * scale) / scale
    },
  },
  floor: { min: 1, max: 1, fn: (n) => Math.floor(num(n, 'floor')) },
  ceil: { min: 1, max: 1, fn: (n) => Math.ceil(num(n, 'ceil')) },
  sqrt: {
    min: 1,
    max: 1,
    fn: (n) => {
      const value = num(n, 'sqrt')
      if (value < 0) throw new RuleEvalError(`sqrt: expected a number ≥ 0, got ${value}`)
      return Math.sqrt(value)
    },
  },
  // Time
  now_timestamp: { min: 0, max: 1, fn: (unit) => Math.floor((Date.now() * (unit === undefined ? 1 : unitOf(unit, 'now_timestamp'))) / 1000) },
  format_date: { min: 3, max: 4, fn: (unit, offset, format, timestamp) => formatDate(unit, offset, format, timestamp) },
  // JSON
  json_encode: { min: 1, max: 1, fn: (v) => JSON.stringify(v ?? null) },
  json_decode: {
    min: 1,
    max: 1,
    fn: (s) => {
      try {
        return JSON.parse(str(s, 'json_decode')) as unknown
      } catch (err) {
        throw new RuleEvalError(`json_decode: not JSON (${(err as Error).message})`)
      }
    },
  },
  // Base64
  base64_encode: { min: 1, max: 1, fn: (s) => Buffer.from(str(s, 'base64_encode'), 'utf8').toString('base64') },
  base64_decode: {
    min: 1,
    max: 1,
    fn: (s) => {
      const text = str(s, 'base64_decode')
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) throw new RuleEvalError('base64_decode: not base64 text')
      return Buffer.from(text, 'base64').toString('utf8')
    },
  },
}
