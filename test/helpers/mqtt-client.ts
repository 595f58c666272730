import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'

/**
 * One MQTT.js connection attempt, no reconnects: resolves on CONNACK, rejects with the error (or
 * a close before CONNACK) otherwise.
 */
export function connectOnce(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, ...options })
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client))
    const fail = (err?: Error): void => {
      client.end(true)
      reject(err ?? new Error('connection closed before CONNACK'))
    }
    client.once('error', fail)
    client.once('close', () => fail())
  })
}
