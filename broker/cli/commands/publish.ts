import { Command, InvalidArgumentError } from 'commander'
import { callApi, withApiOptions, type ApiOptions } from '../api-client.js'
import { printData } from '../output.js'

/* `fleetmq publish TOPIC MESSAGE`: a message published into the cluster through the management API. */

interface PublishOptions extends ApiOptions {
  qos: number
  retain?: boolean
  base64?: boolean
  userProperty?: string[]
  contentType?: string
  messageExpiry?: number
}

function parseQos(value: string): number {
  if (!/^[012]$/.test(value)) throw new InvalidArgumentError(`expected 0, 1 or 2, got "${value}"`)
  return Number(value)
}

function collectProperty(value: string, previous: string[] = []): string[] {
  if (!value.includes('=')) throw new InvalidArgumentError(`expected KEY=VALUE, got "${value}"`)
  return [...previous, value]
}

export const publishCommand = withApiOptions(new Command('publish'))
  .description('publish a message to the cluster (POST /api/v1/publish); the ACL does not apply to an operator')
  .argument('<topic>', 'topic name (no + or #)')
  .argument('[message]', 'payload: text, or base64 with --base64', '')
  .option('-q, --qos <qos>', 'QoS 0, 1 or 2', parseQos, 0)
  .option('-r, --retain', 'retain the message (an empty one deletes the topic\'s retained message)')
  .option('--base64', 'the message is base64 (binary payloads)')
  .option('--user-property <key=value>', 'MQTT 5.0 user property, repeatable', collectProperty)
  .option('--content-type <type>', 'MQTT 5.0 content type')
  .option('--message-expiry <seconds>', 'MQTT 5.0 message expiry interval', (v) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number of seconds ≥ 1, got "${v}"`)
    return n
  })
  .action(async (topic: string, message: string, options: PublishOptions) => {
    const userProperties = options.userProperty ? Object.fromEntries(options.userProperty.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)])) : undefined
    const properties = {
      ...(userProperties ? { userProperties } : {}),
      ...(options.contentType ? { contentType: options.contentType } : {}),
      ...(options.messageExpiry ? { messageExpiryInterval: options.messageExpiry } : {}),
    }
    const body = { topic, payload: message, encoding: options.base64 ? 'base64' : 'plain', qos: options.qos, retain: options.retain === true, ...(Object.keys(properties).length ? { properties } : {}) }
    const answer = await callApi<{ topic: string; qos: number; retain: boolean; bytes: number }>(options, 'POST', '/api/v1/publish', body)
    printData(options, answer, () => `published ${answer.bytes} bytes to ${answer.topic} (QoS ${answer.qos}${answer.retain ? ', retained' : ''})`)
  })
