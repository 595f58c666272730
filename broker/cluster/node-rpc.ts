import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'

/*
 * Asking every node of the cluster, and collecting their answers: how the management API answers
 * for the whole cluster (list the clients, kick one wherever it is, apply a ban now).
 *
 *   fleetmq:<cluster>:rpc                 every node subscribes; a request {id, from, method, params}
 *   fleetmq:<cluster>:rpc-reply:<node>    the asking node subscribes; answers {id, node, result | error}
 *
 * Redis' PUBLISH returns how many subscribers got the request: that is how many answers to wait
 * for (the announce-and-collect pattern of the fan-out's route acknowledgements), with no list of
 * nodes to keep in step. A node that does not answer within the timeout is counted as missing and
 * the call returns what the others said. Redis is the trust boundary here, as for the sessions and
 * the user store in it: whoever can publish to it can already change every record.
 */

/** How long a call waits for every node's answer, ms. */
export const RPC_TIMEOUT_MS = 3_000

export type RpcHandler = (params: unknown) => Promise<unknown> | unknown

export interface NodeAnswer<T> {
  readonly node: string
  readonly result?: T
  readonly error?: string
}

export interface Gathered<T> {
  readonly answers: NodeAnswer<T>[]
  /** Nodes that received the request and did not answer in time (0 when all did). */
  readonly missing: number
}

export interface NodeRpc {
  /** Sends `method` to every node (this one included) and collects their answers. */
  call<T>(method: string, params: unknown): Promise<Gathered<T>>
  close(): Promise<void>
}

interface Request {
  readonly id: string
  readonly from: string
  readonly method: string
  readonly params: unknown
}

interface Reply {
  readonly id: string
  readonly node: string
  readonly result?: unknown
  readonly error?: string
}

export interface NodeRpcOptions {
  readonly pub: Redis
  /** A connection for SUBSCRIBE only. */
  readonly sub: Redis
  readonly cluster: string
  readonly nodeId: string
  readonly handlers: Readonly<Record<string, RpcHandler>>
  readonly log: Logger
  readonly timeoutMs?: number
}

/** The same interface for a standalone node: the call runs here only. */
export function localRpc(nodeId: string, handlers: Readonly<Record<string, RpcHandler>>): NodeRpc {
  return {
    async call<T>(method: string, params: unknown): Promise<Gathered<T>> {
      const handler = handlers[method]
      if (!handler) return { answers: [{ node: nodeId, error: `no such call ${method}` }], missing: 0 }
      try {
        return { answers: [{ node: nodeId, result: (await handler(params)) as T }], missing: 0 }
      } catch (err) {
        return { answers: [{ node: nodeId, error: (err as Error).message }], missing: 0 }
      }
    },
    close: async () => undefined,
  }
}

export function startNodeRpc(options: NodeRpcOptions): NodeRpc {
  const { pub, sub, cluster, nodeId, handlers, log } = options
  const requests = `fleetmq:${cluster}:rpc`
  const replyChannel = (node: string): string => `fleetmq:${cluster}:rpc-reply:${node}`
  const mine = replyChannel(nodeId)
  const pending = new Map<string, { answers: NodeAnswer<unknown>[]; expected: number; done: () => void }>()
  // Errors are the backend's to report (same Redis); without a listener ioredis would throw.
  pub.on('error', () => undefined)
  sub.on('error', () => undefined)

  const answer = async (request: Request): Promise<void> => {
    const handler = handlers[request.method]
    let reply: Reply
    try {
      if (!handler) throw new Error(`no such call ${request.method} (a node of another version?)`)
      reply = { id: request.id, node: nodeId, result: await handler(request.params) }
    } catch (err) {
      reply = { id: request.id, node: nodeId, error: (err as Error).message }
    }
    await pub.publish(replyChannel(request.from), JSON.stringify(reply))
  }

  sub.on('message', (channel: string, text: string) => {
    let message: Request & Reply
    try {
      message = JSON.parse(text) as Request & Reply
    } catch {
      return
    }
    if (channel === requests) {
      answer(message).catch((err: Error) => log.debug({ err, method: message.method }, 'node call: could not answer'))
      return
    }
    if (channel !== mine) return
    const waiting = pending.get(message.id)
    if (!waiting) return
    waiting.answers.push({ node: message.node, ...(message.error !== undefined ? { error: message.error } : { result: message.result }) })
    if (waiting.answers.length >= waiting.expected) waiting.done()
  })
  // Not awaited: a node starting while Redis is down must not wait for it; a call waits instead.
  const subscribed = sub.subscribe(requests, mine).then(() => true, (err: Error) => {
    log.warn({ err }, `node calls: cannot subscribe (${err.message}); this node answers none until Redis is back`)
    return false
  })

  return {
    async call<T>(method: string, params: unknown): Promise<Gathered<T>> {
      if (!(await subscribed)) return { ...(await localRpc(nodeId, handlers).call<T>(method, params)), missing: 1 }
      const id = randomBytes(12).toString('hex')
      const answers: NodeAnswer<unknown>[] = []
      let expected = Number.POSITIVE_INFINITY
      let finish!: () => void
      const finished = new Promise<void>((resolve) => { finish = resolve })
      pending.set(id, { answers, get expected() { return expected }, done: finish })
      try {
        try {
          expected = Number(await pub.publish(requests, JSON.stringify({ id, from: nodeId, method, params } satisfies Request)))
        } catch {
          // Redis unreachable: this node still answers for its own clients; the others are missing.
          const local = await localRpc(nodeId, handlers).call<T>(method, params)
          return { answers: local.answers, missing: 1 }
        }
        if (answers.length < expected) {
          const timer = setTimeout(finish, options.timeoutMs ?? RPC_TIMEOUT_MS)
          await finished
          clearTimeout(timer)
        }
      } finally {
        pending.delete(id)
      }
      return { answers: answers as NodeAnswer<T>[], missing: Math.max(0, expected - answers.length) }
    },
    async close() {
      for (const waiting of pending.values()) waiting.done()
      await Promise.all([pub, sub].map((c) => c.quit().catch(() => c.disconnect())))
    },
  }
}
