import type { Aedes } from 'aedes'
import type { IncomingMessage } from 'node:http'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import type { Config } from '../config/schema.js'
import type { Feature } from '../hooks.js'
import type { Logger } from '../log.js'
import { createBans, type BanRecord } from '../auth/bans.js'
import { clusterUserAdmin, readClusterAcl, storeClusterAcl } from '../auth/cluster-users.js'
import { fileUserAdmin, type UserAdmin } from '../auth/user-store.js'
import { usersFilePath } from '../auth/users.js'
import type { Cluster } from '../cluster/index.js'
import { fileRecords, redisRecords } from '../cluster/records.js'
import { createRedis, describeRedis, redisOptions } from '../cluster/redis.js'
import { createApiKeys, type ApiKeyRecord } from '../mgmt/apikeys.js'
import type { Principal, Route } from '../mgmt/http.js'
import { createNodeView, type ClientFilter } from './node-view.js'
import { ApiError, createOperations, NODE_CALLS, type AclPlace } from './operations.js'
import { apiRoutes } from './routes.js'

/*
 * The management API v1, composed: where its records live (the cluster's Redis, or files in the
 * data folder of a standalone node), the calls this node answers for the cluster, the routes, API
 * key authentication, and the bans feature that enforces bans at CONNECT.
 */

export interface ManagementApi {
  /** Refuses banned clients at CONNECT (before authentication: no password is hashed for them); closes the API's stores. */
  readonly feature: Feature
  readonly routes: Route[]
  /** The principal of a request carrying an API key. */
  authenticate(req: IncomingMessage): Promise<Principal | undefined>
  /** Before the listeners open: sees every client. */
  attach(aedes: Aedes): void
  /** Once the cluster is attached (the node id is final): bans are read and followed. */
  start(): Promise<void>
}

export function createManagementApi(config: Config, log: Logger, cluster: Cluster): ManagementApi {
  const settings = config.cluster.redis
  const redis: Redis | undefined = settings ? createRedis(redisOptions(settings), 'fleetmq-api') : undefined
  // Errors are the backend's to report (same Redis); without a listener ioredis would throw.
  redis?.on('error', () => undefined)
  const name = config.cluster.name
  const bans = createBans(redis ? redisRecords<BanRecord>(redis, name, 'banned') : fileRecords<BanRecord>(join(config.dataDir, 'banned.json')), log)
  const apiKeys = createApiKeys(redis ? redisRecords<ApiKeyRecord>(redis, name, 'apikeys') : fileRecords<ApiKeyRecord>(join(config.dataDir, 'apikeys.json')))
  const users: UserAdmin = redis && settings
    ? clusterUserAdmin(redis, name, `cluster "${name}" (Redis at ${describeRedis(settings)})`)
    : fileUserAdmin(usersFilePath(config))
  const acl: AclPlace = redis
    ? {
        async read() {
          return { acl: (await readClusterAcl(redis, name)) ?? config.acl, where: `cluster "${name}"`, editable: true }
        },
        async write(next) {
          await storeClusterAcl(redis, name, next)
        },
      }
    : {
        read: async () => ({ acl: config.acl, where: 'the acl section of the node\'s config', editable: false }),
        write() {
          throw new ApiError(409, 'CONFLICT', 'this node is standalone: its ACL is the acl section of its config file, applied at start; edit it there (a clustered node\'s ACL is the cluster\'s)')
        },
      }
  const view = createNodeView(() => cluster.nodeId())
  let broker: Aedes | undefined

  cluster.answerCalls({
    [NODE_CALLS.clients]: (params) => {
      const { filter, take } = params as { filter: ClientFilter; take: number }
      return view.clients(filter ?? {}, Number(take) || 0)
    },
    [NODE_CALLS.client]: (params) => view.client(String((params as { clientid: unknown }).clientid)) ?? null,
    [NODE_CALLS.kick]: (params) => {
      const { clientid, by } = params as { clientid: unknown; by: unknown }
      const kicked = view.kick(String(clientid), 'disconnected by an operator')
      if (kicked) log.info({ clientId: clientid, by }, `disconnected client ${String(clientid)} at the request of ${String(by)} (management API)`)
      return kicked
    },
    [NODE_CALLS.subscriptions]: (params) => {
      const { filter, take } = params as { filter: { clientid?: string; topic?: string }; take: number }
      return view.subscriptions(filter ?? {}, Number(take) || 0)
    },
    [NODE_CALLS.refreshBans]: () => bans.refresh(),
  })

  const operations = createOperations({
    config,
    nodes: () => cluster.nodes(),
    rpc: () => cluster.rpc(),
    broker: () => broker,
    bans,
    apiKeys,
    users: () => users,
    acl,
  })

  return {
    feature: {
      name: 'bans',
      preConnect: (client, packet) => bans.preConnect?.(client, packet),
      async close() {
        await bans.close?.()
        await apiKeys.close()
        await redis?.quit().catch(() => redis.disconnect())
      },
    },
    routes: apiRoutes(operations, log),
    authenticate: (req) => apiKeys.authenticate(req),
    attach(aedes) {
      broker = aedes
      view.attach(aedes)
    },
    start: () => bans.start(view),
  }
}
