import { Command, InvalidArgumentError, Option } from 'commander'
import { callApi, pageNote, queryOf, table, withApiOptions, type ApiOptions, type Paged } from '../api-client.js'
import { parsePositiveInt } from '../options.js'
import { printData } from '../output.js'

/*
 * `fleetmq ban add|list|remove`: bans of a client id, a username or an address (or CIDR block),
 * refused at CONNECT on every node; adding one disconnects the clients it matches.
 */

const KINDS = ['clientid', 'username', 'address'] as const

interface BanRow {
  kind: string
  value: string
  reason: string | null
  until: string | null
  created: string
  by: string
}

/** `90`, `90s`, `15m`, `12h`, `7d` → seconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(value)
  if (!match || Number(match[1]) < 1) throw new InvalidArgumentError(`expected a duration such as 90s, 15m, 12h or 7d, got "${value}"`)
  return Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as '' | 's' | 'm' | 'h' | 'd']
}

const kindArgument = (command: Command): Command => command.addOption(new Option('--kind <kind>', 'what VALUE is').choices(KINDS).default('clientid'))

const addCommand = kindArgument(withApiOptions(new Command('add')))
  .description('ban a client id (default), username or address on every node, and disconnect the clients it matches')
  .argument('<value>', 'the client id, username, or address (IPv4/IPv6, or a CIDR block such as 10.0.0.0/8)')
  .option('--for <duration>', 'lift it after this long (90s, 15m, 12h, 7d); without it the ban lasts until removed', parseDuration)
  .option('--reason <text>', 'why, shown in the list')
  .action(async (value: string, options: ApiOptions & { kind: string; for?: number; reason?: string }) => {
    const body = { kind: options.kind, value, ...(options.for ? { duration: options.for } : {}), ...(options.reason ? { reason: options.reason } : {}) }
    const answer = await callApi<{ ban: BanRow; kicked: string[] }>(options, 'POST', '/api/v1/banned', body)
    printData(options, answer, () => `banned ${answer.ban.kind} ${answer.ban.value}${answer.ban.until ? ` until ${answer.ban.until}` : ''} on every node; disconnected ${answer.kicked.length} client${answer.kicked.length === 1 ? '' : 's'}${answer.kicked.length ? `: ${answer.kicked.join(', ')}` : ''}`)
  })

const listCommand = withApiOptions(new Command('list'))
  .description('bans in force')
  .option('--page <n>', 'page, from 1', parsePositiveInt)
  .option('--limit <n>', 'bans per page (at most 1000)', parsePositiveInt)
  .action(async (options: ApiOptions & { page?: number; limit?: number }) => {
    const answer = await callApi<Paged<BanRow>>(options, 'GET', `/api/v1/banned${queryOf({ page: options.page, limit: options.limit })}`)
    printData(options, answer, () => [
      table(['KIND', 'VALUE', 'UNTIL', 'BY', 'REASON'], answer.data.map((b) => [b.kind, b.value, b.until ?? 'removed', b.by, b.reason ?? '-'])),
      pageNote(answer.meta, answer.data.length),
    ].join('\n'))
  })

const removeCommand = kindArgument(withApiOptions(new Command('remove')))
  .description('lift a ban')
  .argument('<value>', 'the banned client id, username or address')
  .action(async (value: string, options: ApiOptions & { kind: string }) => {
    await callApi(options, 'DELETE', `/api/v1/banned/${options.kind}/${encodeURIComponent(value)}`)
    printData(options, { lifted: { kind: options.kind, value } }, () => `lifted the ban of ${options.kind} ${value}`)
  })

export const banCommand = new Command('ban')
  .description('ban client ids, usernames or addresses from the whole cluster')
  .addCommand(addCommand)
  .addCommand(listCommand)
  .addCommand(removeCommand)
