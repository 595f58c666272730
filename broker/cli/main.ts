import { Command } from 'commander'
import { createRequire } from 'node:module'
import { startCommand } from './commands/start.js'
import { configCommand } from './commands/config.js'
import { reportError } from './output.js'

const { version } = createRequire(import.meta.url)('../../../package.json') as { version: string }

/** The root only registers commands; each command is its own module. */
export function buildProgram(): Command {
  return new Command('fleetmq')
    .description('FleetMQ: a clustered MQTT broker (MQTT 3.1, 3.1.1, 5.0)')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .addCommand(startCommand)
    .addCommand(configCommand)
}

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => reportError(err, process.argv.includes('--json')))
