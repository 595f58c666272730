import { Command } from 'commander'
import { FleetmqError } from '../../errors.js'
import { describeIssues, readConfigFile } from '../../config/load.js'
import { aclSettingsSchema, type AclSettings, type Config } from '../../config/schema.js'
import { compileRules } from '../../auth/acl-rules.js'
import { printData } from '../output.js'
import { resolveConfig, type StoreOptions } from '../user-store.js'

/*
 * `fleetmq acl show|set`: a clustered node's ACL is the cluster's, in its Redis, and a change
 * applies on every node within seconds (to every publish, and to subscriptions made from then on);
 * a standalone node's is the `acl` section of its config, applied at start.
 */

async function withClusterRedis<T>(config: Config, action: (redis: import('ioredis').Redis) => Promise<T>): Promise<T> {
  const { connectForCommand } = await import('../../cluster/redis.js')
  const redis = await connectForCommand(config.cluster.redis as NonNullable<Config['cluster']['redis']>, 'fleetmq-acl-cli', config.cluster.name)
  try {
    return await action(redis)
  } finally {
    redis.disconnect()
  }
}

function withNodeOptions(command: Command): Command {
  return command
    .option('-c, --config <file>', 'YAML or JSON config file of the node (FLEETMQ_CONFIG)')
    .option('--data-dir <dir>', 'the node\'s data folder (holds the cluster it joined)')
    .option('--env-file <file>', 'the node\'s FLEETMQ_* environment file (provisioned hosts: /etc/fleetmq/fleetmq.env)')
    .option('--redis <url>', 'the cluster\'s Redis, for a node started with --redis')
    .option('--json', 'print the result as JSON')
}

const showCommand = withNodeOptions(new Command('show'))
  .description('print the ACL in force: the cluster\'s, or the config\'s on a standalone node')
  .action(async (options: StoreOptions) => {
    const config = resolveConfig(options)
    let acl: AclSettings | undefined = config.acl
    let where = 'the acl section of the config'
    if (config.cluster.redis) {
      const { readClusterAcl } = await import('../../auth/cluster-users.js')
      acl = await withClusterRedis(config, (redis) => readClusterAcl(redis, config.cluster.name))
      where = `cluster "${config.cluster.name}"`
    }
    printData(options, { where, acl: acl ?? null }, () => acl
      ? `ACL of ${where}: default ${acl.default}, ${acl.rules.length} rule${acl.rules.length === 1 ? '' : 's'}\n${JSON.stringify(acl.rules, null, 2)}`
      : `${where} has no ACL stored yet; its first node stores its own at start, or set one with fleetmq acl set FILE`)
  })

const setCommand = withNodeOptions(new Command('set'))
  .description('replace the cluster\'s ACL by the one in FILE (YAML or JSON: {default: allow|deny, rules: [...]}, as the config\'s acl section)')
  .argument('<file>', 'the ACL, YAML or JSON')
  .action(async (file: string, options: StoreOptions) => {
    const config = resolveConfig(options)
    if (!config.cluster.redis) {
      throw new FleetmqError('FLAG_INVALID', 'this node is standalone: its ACL is the acl section of its config file, applied at start; edit it there (a clustered node\'s ACL is the cluster\'s)')
    }
    const tree = readConfigFile(file)
    const parsed = aclSettingsSchema.safeParse('acl' in tree ? tree.acl : tree)
    if (!parsed.success) throw new FleetmqError('CONFIG_INVALID', `${file} is not a valid ACL; fix the settings below (nothing was changed)`, describeIssues(parsed.error.issues))
    try {
      compileRules(parsed.data.rules)
    } catch (err) {
      throw new FleetmqError('CONFIG_INVALID', `${file} is not a valid ACL: ${(err as Error).message} (nothing was changed)`)
    }
    const { storeClusterAcl } = await import('../../auth/cluster-users.js')
    await withClusterRedis(config, (redis) => storeClusterAcl(redis, config.cluster.name, parsed.data))
    printData(options, { cluster: config.cluster.name, acl: parsed.data }, () =>
      `stored the ACL of cluster "${config.cluster.name}" (${parsed.data.rules.length} rules, default ${parsed.data.default}); every node applies it within seconds`)
  })

export const aclCommand = new Command('acl')
  .description('show or replace the ACL (a clustered node\'s is the cluster\'s)')
  .addCommand(showCommand)
  .addCommand(setCommand)
