import { InvalidArgumentError } from 'commander'

/*
 * Option parsing shared by the commands: each parser either returns a typed value or throws
 * commander's InvalidArgumentError with a message that says what is allowed.
 */

export interface HostPort {
  readonly host: string
  readonly port: number
}

/** `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces). */
export function parseHostPort(value: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value)
  const port = match ? Number(match[3]) : NaN
  if (!match || port > 65_535) {
    throw new InvalidArgumentError(`expected HOST:PORT (for example 127.0.0.1:1883), got "${value}"`)
  }
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port }
}

export function parsePositiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number ≥ 1, got "${value}"`)
  return n
}
