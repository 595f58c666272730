import { Command } from 'commander'
import { callApi, pageNote, queryOf, table, withApiOptions, type ApiOptions, type Paged } from '../api-client.js'
import { parsePositiveInt } from '../options.js'
import { printData } from '../output.js'

/* `fleetmq retained list|delete`: the cluster's retained messages, through the management API. */

interface RetainedRow {
  topic: string
  payload: string
  encoding: 'plain' | 'base64'
  qos: number
  bytes: number
}

const PREVIEW = 60
const preview = (r: RetainedRow): string => {
  const text = r.encoding === 'plain' ? JSON.stringify(r.payload) : `base64:${r.payload}`
  return text.length > PREVIEW ? `${text.slice(0, PREVIEW - 1)}…` : text
}

const listCommand = withApiOptions(new Command('list'))
  .description('retained messages whose topic matches a filter (GET /api/v1/retained)')
  .argument('[filter]', 'topic filter, wildcards allowed', '#')
  .option('--page <n>', 'page, from 1', parsePositiveInt)
  .option('--limit <n>', 'messages per page (at most 1000)', parsePositiveInt)
  .action(async (filter: string, options: ApiOptions & { page?: number; limit?: number }) => {
    const answer = await callApi<Paged<RetainedRow>>(options, 'GET', `/api/v1/retained${queryOf({ topic: filter, page: options.page, limit: options.limit })}`)
    printData(options, answer, () => [
      table(['TOPIC', 'QOS', 'BYTES', 'PAYLOAD'], answer.data.map((r) => [r.topic, String(r.qos), String(r.bytes), preview(r)])),
      pageNote(answer.meta, answer.data.length),
    ].join('\n'))
  })

const deleteCommand = withApiOptions(new Command('delete'))
  .description('delete the retained message of a topic (no message is sent to subscribers)')
  .argument('<topic>', 'topic name')
  .action(async (topic: string, options: ApiOptions) => {
    await callApi(options, 'DELETE', `/api/v1/retained/${encodeURIComponent(topic)}`)
    printData(options, { deleted: topic }, () => `deleted the retained message of ${topic}`)
  })

export const retainedCommand = new Command('retained')
  .description('list and delete retained messages')
  .addCommand(listCommand)
  .addCommand(deleteCommand)
