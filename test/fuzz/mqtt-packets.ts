import mqttPacket, { type Packet } from 'mqtt-packet'
import type { Rng } from './mutate.js'
import { variableByteInteger } from '../../broker/limits/refuse.js'

/*
 * MQTT structure for the fuzzer: packets of every type for 3.1, 3.1.1 and 5.0, with random
 * properties, encoded by mqtt-packet (the encoder the tests and MQTT.js use), and a lenient split of
 * a byte stream into packets so that a mutation can change one packet and fix its Remaining Length
 * [MQTT-2.2.3], which gets it past the length check into the field parsers.
 */

export type Version = 3 | 4 | 5

const TOPICS = ['a', 'a/b', 'fuzz/+/x', 'fuzz/#', '#', '+', '$SYS/#', '$share/g/fuzz/#', '$share//x', '', 'a//b', '/', 'fuzz/\u0000', 'é/ü', '$SYS/broker/uptime']

/** Property values by name, as mqtt-packet spells them ([MQTT-2.2.2.2] table of properties). */
function randomProperties(rng: Rng): Record<string, unknown> {
  const all: Record<string, () => unknown> = {
    payloadFormatIndicator: () => rng.chance(0.5),
    messageExpiryInterval: () => rng.pick([0, 1, 60, 0xffffffff]),
    contentType: () => rng.pick(['text/plain', '', 'application/json']),
    responseTopic: () => rng.pick(TOPICS),
    correlationData: () => rng.bytes(rng.below(8)),
    subscriptionIdentifier: () => rng.pick([1, 2, 127, 128, 268_435_455]),
    sessionExpiryInterval: () => rng.pick([0, 10, 0xffffffff]),
    assignedClientIdentifier: () => 'assigned',
    serverKeepAlive: () => rng.pick([0, 1, 65535]),
    authenticationMethod: () => rng.pick(['SCRAM-SHA-1', 'x', '']),
    authenticationData: () => rng.bytes(rng.below(8)),
    requestProblemInformation: () => rng.pick([0, 1]),
    willDelayInterval: () => rng.pick([0, 5, 0xffffffff]),
    requestResponseInformation: () => rng.pick([0, 1]),
    responseInformation: () => 'resp',
    serverReference: () => 'other:1883',
    reasonString: () => rng.pick(['why', '']),
    receiveMaximum: () => rng.pick([1, 2, 65535]),
    topicAliasMaximum: () => rng.pick([0, 1, 10, 65535]),
    topicAlias: () => rng.pick([1, 2, 10, 65535]),
    maximumQoS: () => rng.pick([0, 1]),
    retainAvailable: () => rng.chance(0.5),
    userProperties: () => ({ k: rng.pick(['v', '', 'x'.repeat(50)]), [rng.pick(['a', 'b', ''])]: ['1', '2'] }),
    maximumPacketSize: () => rng.pick([1, 20, 128, 1_048_576]),
    wildcardSubscriptionAvailable: () => rng.chance(0.5),
    subscriptionIdentifiersAvailable: () => rng.chance(0.5),
    sharedSubscriptionAvailable: () => rng.chance(0.5),
  }
  const names = Object.keys(all)
  const properties: Record<string, unknown> = {}
  for (let n = rng.below(4); n > 0; n--) {
    const name = rng.pick(names)
    properties[name] = all[name]()
  }
  return properties
}

export function connectPacket(version: Version, rng: Rng): Packet {
  const v5 = version === 5
  return {
    cmd: 'connect',
    protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: version,
    clientId: rng.pick(['', 'fuzz', `fuzz-${rng.below(100)}`, 'bystander-fuzz']),
    clean: rng.chance(0.7),
    keepalive: rng.pick([0, 1, 30, 65535]),
    ...(rng.chance(0.3) ? { username: rng.pick(['u', '', 'admin']), password: Buffer.from('p') } : {}),
    ...(rng.chance(0.3)
      ? { will: { topic: rng.pick(TOPICS), payload: rng.bytes(rng.below(8)), qos: rng.pick([0, 1, 2] as const), retain: rng.chance(0.3), ...(v5 ? { properties: randomProperties(rng) } : {}) } }
      : {}),
    ...(v5 && rng.chance(0.6) ? { properties: randomProperties(rng) } : {}),
  } as Packet
}

/** A packet of any type a client could send (and a few only a server sends, which a broker must refuse). */
export function randomPacket(version: Version, rng: Rng): Packet {
  const v5 = version === 5
  const props = (): object => (v5 && rng.chance(0.5) ? { properties: randomProperties(rng) } : {})
  const reason = (): object => (v5 ? { reasonCode: rng.pick([0, 0x10, 0x80, 0x83, 0x87, 0x91, 0x92]) } : {})
  const messageId = rng.pick([1, 2, 3, 65535])
  switch (rng.below(14)) {
    case 0: return connectPacket(version, rng)
    case 1:
    case 2: {
      const qos = rng.pick([0, 1, 2] as const)
      return { cmd: 'publish', topic: rng.pick(TOPICS), payload: rng.bytes(rng.below(32)), qos, dup: rng.chance(0.2), retain: rng.chance(0.3), ...(qos > 0 ? { messageId } : {}), ...props() } as Packet
    }
    case 3: return { cmd: 'puback', messageId, ...reason(), ...props() } as Packet
    case 4: return { cmd: 'pubrec', messageId, ...reason(), ...props() } as Packet
    case 5: return { cmd: 'pubrel', messageId, ...reason(), ...props() } as Packet
    case 6: return { cmd: 'pubcomp', messageId, ...reason(), ...props() } as Packet
    case 7: {
      const subscriptions = Array.from({ length: 1 + rng.below(3) }, () => ({
        topic: rng.pick(TOPICS),
        qos: rng.pick([0, 1, 2] as const),
        ...(v5 ? { nl: rng.chance(0.3), rap: rng.chance(0.3), rh: rng.pick([0, 1, 2]) } : {}),
      }))
      return { cmd: 'subscribe', messageId, subscriptions, ...props() } as Packet
    }
    case 8: return { cmd: 'unsubscribe', messageId, unsubscriptions: [rng.pick(TOPICS), rng.pick(TOPICS)], ...props() } as Packet
    case 9: return { cmd: 'pingreq' }
    case 10: return { cmd: 'disconnect', ...reason(), ...props() } as Packet
    case 11: return v5 ? { cmd: 'auth', reasonCode: rng.pick([0, 0x18, 0x19]), ...props() } as Packet : { cmd: 'pingreq' }
    case 12: return { cmd: 'connack', sessionPresent: false, ...(v5 ? { reasonCode: 0 } : { returnCode: 0 }) } as Packet
    default: return { cmd: 'suback', messageId, granted: [0, 1, 0x80] } as Packet
  }
}

/** Encodes, or undefined when mqtt-packet refuses the random combination. */
export function encode(packet: Packet, version: Version): Buffer | undefined {
  try {
    return mqttPacket.generate(packet, { protocolVersion: version })
  } catch {
    return undefined
  }
}

/** A plausible session: CONNECT, then a few packets. */
export function randomSession(rng: Rng, version: Version = rng.pick([3, 4, 5, 5] as const)): Buffer {
  const parts: Buffer[] = []
  const connect = encode(connectPacket(version, rng), version)
  if (connect) parts.push(connect)
  for (let n = 1 + rng.below(4); n > 0; n--) {
    const packet = encode(randomPacket(version, rng), version)
    if (packet) parts.push(packet)
  }
  return Buffer.concat(parts)
}

/** Splits a stream into packets by fixed header and Remaining Length; the rest (if any) is one last chunk. */
export function splitPackets(bytes: Buffer): Buffer[] {
  const packets: Buffer[] = []
  let pos = 0
  while (pos < bytes.length) {
    let remaining = 0
    let multiplier = 1
    let cursor = pos + 1
    let complete = false
    while (cursor < bytes.length && cursor <= pos + 4) {
      const byte = bytes[cursor++]
      remaining += (byte & 0x7f) * multiplier
      multiplier *= 128
      if ((byte & 0x80) === 0) {
        complete = true
        break
      }
    }
    const end = cursor + remaining
    if (!complete || end > bytes.length) break
    packets.push(bytes.subarray(pos, end))
    pos = end
  }
  if (pos < bytes.length) packets.push(bytes.subarray(pos))
  return packets
}

/** Rebuilds a packet from its first byte and a body, with the Remaining Length that fits. */
export function framePacket(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...variableByteInteger(Math.min(body.length, 268_435_455))]), body])
}

/** The body of a packet (after its fixed header), or undefined when the header is cut short. */
export function packetBody(packet: Buffer): Buffer | undefined {
  let cursor = 1
  while (cursor < packet.length && cursor <= 4) {
    if ((packet[cursor++] & 0x80) === 0) return packet.subarray(cursor)
  }
  return undefined
}
