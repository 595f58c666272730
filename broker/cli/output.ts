import { isFleetmqError } from '../errors.js'

/** Data goes to stdout: JSON with `--json`, the human rendering otherwise. */
export function printData(options: { json?: boolean }, data: unknown, human: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(data, null, 2)}\n` : `${human()}\n`)
}

/** The one error handler: a one-line cause (and findings, one per line) on stderr, exit 1. */
export function reportError(err: unknown, json: boolean): never {
  if (json) {
    const body = isFleetmqError(err)
      ? { error: { code: err.code, message: err.message, details: err.details } }
      : { error: { code: 'FLEETMQ_ERR_INTERNAL', message: (err as Error).message } }
    process.stdout.write(`${JSON.stringify(body)}\n`)
  } else if (isFleetmqError(err)) {
    process.stderr.write(`fleetmq: ${err.message} [${err.code}]\n${err.details.map((d) => `  - ${d}\n`).join('')}`)
  } else {
    process.stderr.write(`fleetmq: ${(err as Error).message ?? String(err)}\n`)
  }
  process.exit(1)
}
