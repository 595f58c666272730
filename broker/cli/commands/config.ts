import { Command } from 'commander'
import { readConfigFile, validateConfig, mergeTrees } from '../../config/load.js'
import { configFromEnv } from '../../config/env.js'
import { FleetmqError } from '../../errors.js'
import { printData } from '../output.js'

const checkCommand = new Command('check')
  .description('validate a config file (and FLEETMQ_* variables); reports every error with its path')
  .argument('<file>', 'YAML or JSON config file')
  .option('--json', 'print the result as JSON')
  .action((file: string, options: { json?: boolean }) => {
    const result = validateConfig(mergeTrees(readConfigFile(file), configFromEnv(process.env)))
    if (!result.ok) {
      throw new FleetmqError('CONFIG_INVALID', `${file}: ${result.errors.length} error${result.errors.length === 1 ? '' : 's'}`, result.errors)
    }
    printData(options, { file, valid: true, config: result.config }, () => `${file}: valid`)
  })

export const configCommand = new Command('config').description('inspect and validate configuration').addCommand(checkCommand)
