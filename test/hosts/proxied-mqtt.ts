import { connect as tcpConnect, isIPv4 } from 'node:net'
import { MqttClient, type IClientOptions } from 'mqtt'

/*
 * MQTT.js through a PROXY protocol v2 header, as the AWS NLB connects to a broker node: the nodes
 * that `pulumi up` provisions require one on their MQTT listener.
 */

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

/** A PROXY v2 PROXY command for TCP over IPv4 (spec section 2.2: version 2, command PROXY, AF_INET + STREAM). */
export function proxyV2Header(source: { address: string; port: number }, destination: { address: string; port: number }): Buffer {
  if (!isIPv4(source.address) || !isIPv4(destination.address)) throw new Error('proxyV2Header takes IPv4 addresses')
  const addresses = Buffer.alloc(12)
  Buffer.from(source.address.split('.').map(Number)).copy(addresses, 0)
  Buffer.from(destination.address.split('.').map(Number)).copy(addresses, 4)
  addresses.writeUInt16BE(source.port, 8)
  addresses.writeUInt16BE(destination.port, 10)
  return Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0x00, addresses.length]), addresses])
}

/** The client address the "load balancer" reports for test clients (TEST-NET-3, RFC 5737). */
export const CLIENT_ADDRESS = '203.0.113.7'

/**
 * Connects an MQTT.js client to host:port through a PROXY v2 header; resolves on CONNACK.
 * `onMessage` is attached before CONNECT: messages queued for a persistent session arrive at once.
 */
export async function connectProxied(host: string, port: number, options: IClientOptions = {}, onMessage?: (topic: string, payload: Buffer) => void): Promise<MqttClient> {
  const client = new MqttClient(() => {
    const socket = tcpConnect({ host, port })
    socket.write(proxyV2Header({ address: CLIENT_ADDRESS, port: 40_000 + Math.floor(Math.random() * 20_000) }, { address: host, port }))
    return socket
  }, { reconnectPeriod: 0, connectTimeout: 10_000, ...options })
  if (onMessage) client.on('message', onMessage)
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
    client.once('close', () => reject(new Error(`the connection to ${host}:${port} closed before CONNACK`)))
  })
  return client
}
