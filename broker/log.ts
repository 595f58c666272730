import { pino, type Logger, type LoggerOptions } from 'pino'
import type { Config } from './config/schema.js'

export type { Logger }

type Serialized = Record<string, unknown>

const isErrorLike = (value: unknown): value is Serialized =>
  typeof value === 'object' && value !== null && typeof (value as { message?: unknown }).message === 'string'

/**
 * ioredis attaches the failed command to its errors (`err.command = { name, args }`), and pino's
 * error serializer copies every property of an error: a refused AUTH would log the Redis
 * password. The command's name stays (it says what failed), its arguments never reach a log; so
 * in nested errors (AggregateError, ioredis' lastNodeError).
 */
function dropCommandArgs(serialized: Serialized, depth = 0): Serialized {
  if (depth > 4) return serialized
  const command = serialized.command as { name?: unknown } | undefined
  if (command !== undefined) serialized.command = typeof command?.name === 'string' ? { name: command.name } : '[Redacted]'
  for (const [key, value] of Object.entries(serialized)) {
    if (key === 'raw') continue
    if (Array.isArray(value)) value.forEach((item) => { if (isErrorLike(item)) dropCommandArgs(item, depth + 1) })
    else if (isErrorLike(value)) dropCommandArgs(value, depth + 1)
  }
  return serialized
}

/** pino's error serializer (type, message and stack with their causes), without command arguments. */
export function serializeError(err: unknown): unknown {
  const serialized = pino.stdSerializers.err(err as Error) as unknown
  return isErrorLike(serialized) ? dropCommandArgs(serialized) : serialized
}

/**
 * Fields that hold credentials wherever a caller puts them. A second line behind the serializer:
 * pino's `redact` censors these paths in every line.
 */
export const REDACTED_PATHS = Object.freeze([
  'password', '*.password', '*.*.password', 'authorization', '*.authorization', '*.headers.authorization', '*.headers.cookie',
  'err.command.args', '*.command.args',
])

const redaction: Pick<LoggerOptions, 'serializers' | 'redact' | 'formatters'> = {
  serializers: { err: serializeError },
  redact: { paths: [...REDACTED_PATHS], censor: '[Redacted]' },
  formatters: {
    // An error under another key than `err` (`error`, `lastError`) is serialized the same way:
    // without it, JSON.stringify would still write its enumerable `command`.
    log: (object) => {
      let copy: Record<string, unknown> | undefined
      for (const [key, value] of Object.entries(object)) {
        if (key !== 'err' && value instanceof Error) (copy ??= { ...object })[key] = serializeError(value)
      }
      return copy ?? object
    },
  },
}

/**
 * Structured JSON logs (one object per line, for journald and log shippers); human-readable
 * when stderr is a terminal or `log.format` says `pretty`. Credentials never reach either (see
 * `redaction`).
 */
export function createLogger(settings: Config['log'], destination: NodeJS.WritableStream = process.stderr): Logger {
  const pretty = settings.format === 'pretty' || (settings.format === 'auto' && (destination as { isTTY?: boolean }).isTTY === true)
  if (pretty) {
    return pino({
      level: settings.level,
      ...redaction,
      transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    })
  }
  return pino({ level: settings.level, base: { service: 'fleetmq' }, ...redaction }, destination as pino.DestinationStream)
}
