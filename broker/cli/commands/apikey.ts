import { Command, Option } from 'commander'
import { callApi, pageNote, table, withApiOptions, type ApiOptions, type Paged } from '../api-client.js'
import { printData } from '../output.js'

/*
 * `fleetmq apikey add|list|remove`: keys for the management API (`Authorization: Bearer KEY`), with
 * a role: viewer (reads), operator (also kicks, publishes, deletes retained messages, bans), admin
 * (everything, users, ACL and keys included). The key is printed once; only its hash is kept.
 */

interface KeyRow {
  name: string
  role: string
  prefix: string
  created: string
}

const addCommand = withApiOptions(new Command('add'))
  .description('make an API key; it is printed once, keep it in a secret store')
  .argument('<name>', 'a name for the key (letters, digits, . _ -), to list and remove it')
  .addOption(new Option('--role <role>', 'what the key may do').choices(['viewer', 'operator', 'admin']).makeOptionMandatory())
  .action(async (name: string, options: ApiOptions & { role: string }) => {
    const answer = await callApi<KeyRow & { key: string }>(options, 'POST', '/api/v1/apikeys', { name, role: options.role })
    printData(options, answer, () => `${answer.key}\n(API key "${answer.name}", role ${answer.role}: shown this once; send it as Authorization: Bearer KEY)`)
  })

const listCommand = withApiOptions(new Command('list'))
  .description('API keys: name, role, first characters (never the keys)')
  .action(async (options: ApiOptions) => {
    const answer = await callApi<Paged<KeyRow>>(options, 'GET', '/api/v1/apikeys?limit=1000')
    printData(options, answer, () => [
      table(['NAME', 'ROLE', 'KEY', 'CREATED'], answer.data.map((k) => [k.name, k.role, `${k.prefix}…`, k.created])),
      pageNote(answer.meta, answer.data.length),
    ].join('\n'))
  })

const removeCommand = withApiOptions(new Command('remove'))
  .description('remove an API key; it stops working on every node within a second')
  .argument('<name>', 'the key\'s name')
  .action(async (name: string, options: ApiOptions) => {
    await callApi(options, 'DELETE', `/api/v1/apikeys/${encodeURIComponent(name)}`)
    printData(options, { removed: name }, () => `removed API key "${name}"`)
  })

export const apikeyCommand = new Command('apikey')
  .description('API keys for the management API')
  .addCommand(addCommand)
  .addCommand(listCommand)
  .addCommand(removeCommand)
