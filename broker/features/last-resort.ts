import type { Logger } from '../log.js'

/*
 * The last-resort handler: an exception no code path caught (a bug, like the unparsable request
 * target that once escaped a request handler) is logged and counted, and the node keeps serving its
 * clients. Exiting instead turns one bad request into an outage for every device on the node, and
 * repeated ones exhaust systemd's start limit. Every handler that can fail on input still handles
 * its own errors: this only keeps the process up when one does not.
 */

let uncaught = 0

/** Uncaught exceptions and unhandled rejections since the process started. */
export function uncaughtErrors(): number {
  return uncaught
}

export function installLastResortHandler(log: Logger): void {
  const report = (kind: string) => (err: unknown): void => {
    uncaught++
    log.error({ err, kind }, `${kind}: ${(err as Error | undefined)?.message ?? String(err)}; the node keeps serving (this is a bug: please report it with this log line)`)
  }
  process.on('uncaughtException', report('uncaught exception'))
  process.on('unhandledRejection', report('unhandled rejection'))
}
