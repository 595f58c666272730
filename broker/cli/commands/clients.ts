import { Command } from 'commander'
import { callApi, pageNote, queryOf, table, withApiOptions, type ApiOptions, type Paged } from '../api-client.js'
import { parsePositiveInt } from '../options.js'
import { printData } from '../output.js'

/* `fleetmq clients list|kick`: the connected clients of the whole cluster, through the management API. */

interface ClientRow {
  clientid: string
  username: string | null
  ip: string | null
  node: string
  protocolVersion: number
  subscriptions: number
  connectedAt: string | null
}

interface ListOptions extends ApiOptions {
  clientid?: string
  username?: string
  ip?: string
  onNode?: string
  page?: number
  limit?: number
}

const listCommand = withApiOptions(new Command('list'))
  .description('connected clients on every node, by client id (GET /api/v1/clients)')
  .option('--clientid <id>', 'this client id only')
  .option('--username <name>', 'this username only')
  .option('--ip <address>', 'this client address only')
  .option('--on-node <id>', 'clients of this node only (a node id as fleetmq cluster status shows it)')
  .option('--page <n>', 'page, from 1', parsePositiveInt)
  .option('--limit <n>', 'clients per page (at most 1000)', parsePositiveInt)
  .action(async (options: ListOptions) => {
    const path = `/api/v1/clients${queryOf({ clientid: options.clientid, username: options.username, ip: options.ip, node: options.onNode, page: options.page, limit: options.limit })}`
    const answer = await callApi<Paged<ClientRow>>(options, 'GET', path)
    printData(options, answer, () => [
      table(['CLIENT ID', 'USERNAME', 'ADDRESS', 'NODE', 'MQTT', 'SUBS', 'CONNECTED AT'], answer.data.map((c) => [
        c.clientid, c.username ?? '-', c.ip ?? '-', c.node, c.protocolVersion === 5 ? '5.0' : c.protocolVersion === 4 ? '3.1.1' : '3.1', String(c.subscriptions), c.connectedAt ?? '-',
      ])),
      pageNote(answer.meta, answer.data.length),
    ].join('\n'))
  })

const kickCommand = withApiOptions(new Command('kick'))
  .description('disconnect a client on whichever node holds it (MQTT 5.0: DISCONNECT 0x98 Administrative action); its session stays')
  .argument('<clientid>', 'the client identifier')
  .action(async (clientid: string, options: ApiOptions) => {
    const answer = await callApi<{ clientid: string; node: string }>(options, 'DELETE', `/api/v1/clients/${encodeURIComponent(clientid)}`)
    printData(options, answer, () => `disconnected ${answer.clientid} (it was on node ${answer.node})`)
  })

export const clientsCommand = new Command('clients')
  .description('list and disconnect the clients of the cluster')
  .addCommand(listCommand)
  .addCommand(kickCommand)
