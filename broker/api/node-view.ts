import type { Aedes, Client } from 'aedes'
import { clientAddress, clientIdentity } from '../auth/identity.js'
import { normalizeAddress } from '../auth/acl-rules.js'
import { localClients } from '../cluster/drain.js'
import { connectionInfo } from '../connection-info.js'
import { disconnectClient, REASON } from '../limits/refuse.js'
import { internals } from '../core/aedes-adapter.js'
import { parseSharedTopic } from '../shared/topic.js'

/*
 * What one node knows of the clients connected to it, for the management API: the answers each
 * node gives to the cluster-wide calls (clients, subscriptions, kick). It reads the broker only
 * through the public client fields and the aedes adapter (mqtt/aedes-internals.ts, cluster/drain.ts).
 */

export interface ClientView {
  readonly clientid: string
  readonly username: string | null
  readonly ip: string | null
  readonly port: number | null
  readonly node: string
  readonly listener: string | null
  readonly protocolVersion: number
  /** The session ends with the connection (3.1.1 clean session, 5.0 clean start with expiry 0). */
  readonly cleanSession: boolean
  readonly connectedAt: string | null
  readonly subscriptions: number
}

export interface SubscriptionView {
  readonly clientid: string
  readonly node: string
  /** The filter as the client sent it (`$share/<group>/<filter>` for a shared subscription). */
  readonly topic: string
  readonly qos: number
}

export interface ClientFilter {
  readonly clientid?: string
  readonly username?: string
  readonly ip?: string
  readonly node?: string
}

/** The first `take` matches in client id order, and how many matched in all. */
export interface Slice<T> {
  readonly count: number
  readonly items: T[]
}

const sameAddress = (a: string, b: string): boolean => (normalizeAddress(a)?.address ?? a) === (normalizeAddress(b)?.address ?? b)

/** The filter as the client sent it: the broker renames shared subscriptions on arrival (shared/topic.ts). */
function sentFilter(topic: string): string {
  const shared = parseSharedTopic(topic)
  return shared ? `$share/${shared.group}/${shared.filter}` : topic
}

export interface NodeView {
  attach(aedes: Aedes): void
  clients(filter: ClientFilter, take: number): Slice<ClientView>
  client(clientid: string): ClientView | undefined
  subscriptions(filter: { clientid?: string; topic?: string }, take: number): Slice<SubscriptionView>
  /** Disconnects the client (5.0: DISCONNECT 0x98 Administrative action); false when it is not here. */
  kick(clientid: string, reason: string): boolean
  /** Disconnects every client `match` selects, as `kick` does; returns their ids. */
  kickWhere(match: (client: ClientView) => boolean, reason: string): string[]
}

export function createNodeView(nodeId: () => string): NodeView {
  let broker: Aedes | undefined
  const connectedAt = new WeakMap<Client, number>()
  const connected = (): Client[] => (broker ? localClients(broker).filter((c) => c.connected && !c.closed) : [])

  const view = (client: Client): ClientView => {
    const info = connectionInfo(client)
    const at = connectedAt.get(client)
    return {
      clientid: client.id,
      username: clientIdentity(client)?.username ?? null,
      ip: clientAddress(client) ?? null,
      port: info?.remotePort ?? null,
      node: nodeId(),
      listener: info?.listener ?? null,
      protocolVersion: client.version,
      cleanSession: client.clean,
      connectedAt: at === undefined ? null : new Date(at).toISOString(),
      subscriptions: Object.keys(internals(client).subscriptions ?? {}).length,
    }
  }
  const matches = (client: ClientView, filter: ClientFilter): boolean =>
    (filter.clientid === undefined || client.clientid === filter.clientid)
    && (filter.username === undefined || client.username === filter.username)
    && (filter.ip === undefined || (client.ip !== null && sameAddress(client.ip, filter.ip)))
    && (filter.node === undefined || client.node === filter.node)
  const byId = <T extends { clientid: string }>(a: T, b: T): number => (a.clientid < b.clientid ? -1 : a.clientid > b.clientid ? 1 : 0)
  const end = (client: Client, reason: string): void => disconnectClient(client, REASON.ADMINISTRATIVE_ACTION, reason)

  return {
    attach(aedes) {
      broker = aedes
      aedes.on('client', (client) => connectedAt.set(client, Date.now()))
    },
    clients(filter, take) {
      if (filter.node !== undefined && filter.node !== nodeId()) return { count: 0, items: [] }
      const all = connected().map(view).filter((c) => matches(c, filter)).sort(byId)
      return { count: all.length, items: all.slice(0, take) }
    },
    client(clientid) {
      const client = connected().find((c) => c.id === clientid)
      return client ? view(client) : undefined
    },
    subscriptions(filter, take) {
      const all: SubscriptionView[] = []
      for (const client of connected()) {
        if (filter.clientid !== undefined && client.id !== filter.clientid) continue
        for (const [topic, sub] of Object.entries(internals(client).subscriptions ?? {})) {
          const sent = sentFilter(topic)
          if (filter.topic !== undefined && sent !== filter.topic) continue
          all.push({ clientid: client.id, node: nodeId(), topic: sent, qos: sub.qos })
        }
      }
      all.sort((a, b) => byId(a, b) || (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0))
      return { count: all.length, items: all.slice(0, take) }
    },
    kick(clientid, reason) {
      const client = connected().find((c) => c.id === clientid)
      if (!client) return false
      end(client, reason)
      return true
    },
    kickWhere(match, reason) {
      const kicked: string[] = []
      for (const client of connected()) {
        if (!match(view(client))) continue
        end(client, reason)
        kicked.push(client.id)
      }
      return kicked
    },
  }
}
