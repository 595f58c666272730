import { pino, type Logger } from 'pino'
import type { Config } from './config/schema.js'

export type { Logger }

/**
 * Structured JSON logs (one object per line, for journald and log shippers); human-readable
 * when stderr is a terminal or `log.format` says `pretty`.
 */
export function createLogger(settings: Config['log'], destination: NodeJS.WritableStream = process.stderr): Logger {
  const pretty = settings.format === 'pretty' || (settings.format === 'auto' && (destination as { isTTY?: boolean }).isTTY === true)
  if (pretty) {
    return pino({
      level: settings.level,
      transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    })
  }
  return pino({ level: settings.level, base: { service: 'fleetmq' } }, destination as pino.DestinationStream)
}
