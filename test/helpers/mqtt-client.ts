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

/** SUBACK return codes, including refused ones (MQTT.js rejects the promise when one is refused). */
export async function subackCodes(client: MqttClient, topics: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  try {
    return (await client.subscribeAsync(topics, { qos })).map((g) => g.qos)
  } catch (err) {
    const packet = (err as { packet?: { granted: number[] } }).packet
    if (!packet) throw err
    return packet.granted
  }
}

/** The PUBACK (QoS 1) or PUBREC (QoS 2) reason code of a publish (0 = success). */
export async function pubackCode(client: MqttClient, topic: string, payload: string, qos: 1 | 2 = 1): Promise<number> {
  try {
    await client.publishAsync(topic, payload, { qos })
    return 0
  } catch (err) {
    return (err as { code: number }).code
  }
}
