import { Command } from 'commander'
import { startCommand } from './commands/start.js'
import { configCommand } from './commands/config.js'
import { userCommand } from './commands/user.js'
import { aclCommand } from './commands/acl.js'
import { clusterCommand } from './commands/cluster.js'
import { ruleCommand } from './commands/rule.js'
import { clientsCommand } from './commands/clients.js'
import { publishCommand } from './commands/publish.js'
import { retainedCommand } from './commands/retained.js'
import { banCommand } from './commands/ban.js'
import { apikeyCommand } from './commands/apikey.js'
import { reportError } from './output.js'
import { FLEETMQ_VERSION } from '../version.js'

/** The root only registers commands; each command is its own module. */
export function buildProgram(): Command {
  return new Command('fleetmq')
    .description('FleetMQ: a clustered MQTT broker (MQTT 3.1, 3.1.1, 5.0)')
    .version(FLEETMQ_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .addCommand(startCommand)
    .addCommand(configCommand)
    .addCommand(userCommand)
    .addCommand(aclCommand)
    .addCommand(clusterCommand)
    .addCommand(ruleCommand)
    .addCommand(clientsCommand)
    .addCommand(publishCommand)
    .addCommand(retainedCommand)
    .addCommand(banCommand)
    .addCommand(apikeyCommand)
}

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => reportError(err, process.argv.includes('--json')))
