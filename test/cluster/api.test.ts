import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, type RunningFleetmq } from '../helpers/fleetmq.js'
import { clusterOnRedis, collect, connect, nextEvent, tokenOf, waitUntil } from './nodes.js'

/*
 * The management API v1 answers for the whole cluster from any node: every route against three
 * nodes on one Redis. A client connected to one node is listed, inspected and kicked through
 * another's API; users, ACL, bans and API keys written through one node apply on the others.
 */

const nodes = clusterOnRedis(3)
const [n1, n2, n3] = [0, 1, 2].map((i) => (): RunningFleetmq => nodes[i])

interface Answer<T = Record<string, unknown>> {
  status: number
  body: T
}

async function api<T = Record<string, unknown>>(node: RunningFleetmq, method: string, path: string, options: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer<T>> {
  const res = await fetch(`http://127.0.0.1:${node.mgmtPort}${path}`, {
    method,
    headers: { ...(options.headers ?? tokenOf(node)), ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  })
  const text = await res.text()
  const isJson = res.headers.get('content-type')?.startsWith('application/json') === true
  return { status: res.status, body: (isJson ? JSON.parse(text) : text) as T }
}

interface Page<T> {
  data: T[]
  meta: { page: number; limit: number; count: number; hasNext: boolean; incomplete?: boolean }
}

const nodeIdOf = async (node: RunningFleetmq): Promise<string> => {
  const { body } = await api<Page<{ id: string; self: boolean }>>(node, 'GET', '/api/v1/nodes')
  return (body.data.find((n) => n.self) as { id: string }).id
}

const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` })

test('every node serves the OpenAPI document; without credentials a route is 401, a bad parameter a 400 naming the field', async () => {
  for (const node of nodes) {
    const doc = await fetch(`http://127.0.0.1:${node.mgmtPort}/api/v1/openapi.json`)
    assert.equal(doc.status, 200)
    const body = (await doc.json()) as { openapi: string; paths: Record<string, unknown> }
    assert.equal(body.openapi, '3.1.0')
    assert.ok(body.paths['/api/v1/clients/{clientid}'])
  }
  const anonymous = await api(n1(), 'GET', '/api/v1/clients', { headers: {} })
  assert.equal(anonymous.status, 401)
  assert.equal(anonymous.body.code, 'UNAUTHORIZED')
  const badLimit = await api(n1(), 'GET', '/api/v1/clients?limit=5000')
  assert.deepEqual([badLimit.status, badLimit.body.code, badLimit.body.field], [400, 'BAD_REQUEST', 'query.limit'])
  assert.match(String(badLimit.body.message), /query\.limit must be at most 1000/)
  const misspelt = await api(n1(), 'GET', '/api/v1/clients?clientId=x')
  assert.deepEqual([misspelt.status, misspelt.body.field], [400, 'query.clientId'])
  const badBody = await api(n1(), 'POST', '/api/v1/publish', { body: { topic: 'a/b', qos: 3 } })
  assert.deepEqual([badBody.status, badBody.body.field], [400, 'body.qos'])
  const wildcard = await api(n1(), 'POST', '/api/v1/publish', { body: { topic: 'a/#' } })
  assert.deepEqual([wildcard.status, wildcard.body.field], [400, 'body.topic'])
  const wrongMethod = await fetch(`http://127.0.0.1:${n1().mgmtPort}/api/v1/clients/x`, { method: 'PUT', headers: tokenOf(n1()) })
  assert.equal(wrongMethod.status, 405)
  assert.equal(wrongMethod.headers.get('allow'), 'GET, DELETE', 'a 405 names the methods the resource has [RFC 9110 §15.5.6]')
  const notJson = await fetch(`http://127.0.0.1:${n1().mgmtPort}/api/v1/publish`, { method: 'POST', headers: { ...tokenOf(n1()), 'content-type': 'application/json' }, body: '{' })
  assert.equal(notJson.status, 400)
  assert.equal(((await notJson.json()) as { field: string }).field, 'body')
})

test('nodes: all three from any node, with version, uptime, connections, rates and host CPU, memory and load; paginated', async () => {
  const { status, body } = await api<Page<Record<string, unknown> & { system: Record<string, unknown> }>>(n2(), 'GET', '/api/v1/nodes')
  assert.equal(status, 200)
  assert.equal(body.meta.count, 3)
  for (const node of body.data) {
    assert.equal(node.health, 'up')
    assert.equal(typeof node.version, 'string')
    assert.equal(typeof node.uptime, 'number')
    assert.equal(typeof node.connections, 'number')
    assert.equal(typeof node.msgInRate, 'number')
    assert.ok(Number(node.system.cpus) >= 1)
    assert.equal((node.system.load as number[]).length, 3)
    assert.ok(Number(node.system.memoryTotal) > Number(node.system.memoryFree))
    assert.ok(Number(node.system.processRss) > 0)
  }
  const first = await api<Page<unknown>>(n2(), 'GET', '/api/v1/nodes?limit=2')
  assert.deepEqual([first.body.data.length, first.body.meta.hasNext], [2, true])
  const second = await api<Page<unknown>>(n2(), 'GET', '/api/v1/nodes?limit=2&page=2')
  assert.deepEqual([second.body.data.length, second.body.meta.hasNext], [1, false])
  const down = await api<Page<unknown>>(n2(), 'GET', '/api/v1/nodes?status=down')
  assert.equal(down.body.meta.count, 0)
})

test('clients: a client on node 2 is listed, filtered, inspected and kicked through node 1; its subscriptions are cluster-wide', async () => {
  const node2 = await nodeIdOf(n2())
  const device = await connect(n2(), { clientId: 'api-device-1', protocolVersion: 5 })
  const other = await connect(n3(), { clientId: 'api-device-2', protocolVersion: 4 })
  try {
    await device.subscribeAsync('fleet/api-device-1/cmd', { qos: 1 })
    await device.subscribeAsync('$share/workers/jobs/#', { qos: 0 })
    const listed = await api<Page<{ clientid: string; node: string; ip: string; protocolVersion: number; subscriptions: number }>>(n1(), 'GET', '/api/v1/clients')
    assert.equal(listed.status, 200)
    const mine = listed.body.data.filter((c) => c.clientid.startsWith('api-device-'))
    assert.deepEqual(mine.map((c) => c.clientid), ['api-device-1', 'api-device-2'])
    assert.equal(mine[0].node, node2)
    assert.equal(mine[0].protocolVersion, 5)
    assert.equal(mine[0].subscriptions, 2)
    assert.equal(mine[1].protocolVersion, 4)

    const byId = await api<Page<{ clientid: string }>>(n1(), 'GET', '/api/v1/clients?clientid=api-device-1')
    assert.deepEqual(byId.body.data.map((c) => c.clientid), ['api-device-1'])
    const byNode = await api<Page<{ clientid: string }>>(n1(), 'GET', `/api/v1/clients?node=${encodeURIComponent(node2)}`)
    assert.deepEqual(byNode.body.data.map((c) => c.clientid), ['api-device-1'])
    const byIp = await api<Page<{ clientid: string }>>(n1(), 'GET', '/api/v1/clients?ip=127.0.0.1')
    assert.ok(byIp.body.meta.count >= 2)
    const elsewhere = await api<Page<unknown>>(n1(), 'GET', '/api/v1/clients?ip=192.0.2.1')
    assert.equal(elsewhere.body.meta.count, 0)
    const paged = await api<Page<{ clientid: string }>>(n1(), 'GET', '/api/v1/clients?limit=1&page=2')
    assert.equal(paged.body.data.length, 1)
    assert.equal(paged.body.meta.hasNext, paged.body.meta.count > 2)

    const one = await api<{ clientid: string; node: string }>(n3(), 'GET', '/api/v1/clients/api-device-1')
    assert.deepEqual([one.status, one.body.node], [200, node2])
    assert.equal((await api(n3(), 'GET', '/api/v1/clients/nobody-here')).status, 404)

    const subs = await api<Page<{ topic: string; qos: number; node: string }>>(n1(), 'GET', '/api/v1/clients/api-device-1/subscriptions')
    assert.deepEqual(subs.body.data.map((s) => [s.topic, s.qos]), [['$share/workers/jobs/#', 0], ['fleet/api-device-1/cmd', 1]])
    const byTopic = await api<Page<{ clientid: string }>>(n3(), 'GET', `/api/v1/subscriptions?topic=${encodeURIComponent('fleet/api-device-1/cmd')}`)
    assert.deepEqual(byTopic.body.data.map((s) => s.clientid), ['api-device-1'])
    assert.equal((await api(n1(), 'GET', '/api/v1/clients/nobody-here/subscriptions')).status, 404)

    const disconnected = nextEvent<[{ reasonCode?: number }]>(device, 'disconnect')
    const kicked = await api<{ clientid: string; node: string }>(n1(), 'DELETE', '/api/v1/clients/api-device-1')
    assert.deepEqual([kicked.status, kicked.body.node], [200, node2])
    const [packet] = await disconnected
    assert.equal(packet.reasonCode, 0x98, 'DISCONNECT 0x98 Administrative action')
    await waitUntil('the kicked client is gone from the list', async () => (await api<Page<unknown>>(n1(), 'GET', '/api/v1/clients?clientid=api-device-1')).body.meta.count === 0)
    assert.equal((await api(n1(), 'DELETE', '/api/v1/clients/api-device-1')).status, 404)
  } finally {
    device.end(true)
    await other.endAsync()
  }
})

test('publish: a message posted to node 3 reaches a 5.0 subscriber on node 2 with its properties; retained ones are listed, read and deleted', async () => {
  const subscriber = await connect(n2(), { clientId: 'api-sub', protocolVersion: 5 })
  const got: { topic: string; payload: string; properties?: Record<string, unknown> }[] = []
  subscriber.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), properties: packet.properties as Record<string, unknown> }))
  try {
    await subscriber.subscribeAsync('api/pub/#', { qos: 1 })
    const posted = await api(n3(), 'POST', '/api/v1/publish', {
      body: { topic: 'api/pub/text', payload: 'hello', qos: 1, properties: { userProperties: { origin: 'backend' }, contentType: 'text/plain' } },
    })
    assert.deepEqual(posted.body, { topic: 'api/pub/text', qos: 1, retain: false, bytes: 5 })
    const binary = Buffer.from([0, 255, 1, 254])
    await api(n3(), 'POST', '/api/v1/publish', { body: { topic: 'api/pub/bin', payload: binary.toString('base64'), encoding: 'base64', qos: 0, retain: true } })
    await waitUntil('both messages arrive on node 2', () => got.length >= 2)
    const text = got.find((m) => m.topic === 'api/pub/text')
    assert.equal(text?.payload, 'hello')
    assert.deepEqual({ ...(text?.properties?.userProperties as object) }, { origin: 'backend' })
    assert.equal(text?.properties?.contentType, 'text/plain')

    await api(n1(), 'POST', '/api/v1/publish', { body: { topic: 'api/retained/a', payload: 'A', retain: true } })
    const listed = await api<Page<{ topic: string; payload: string; encoding: string }>>(n2(), 'GET', `/api/v1/retained?topic=${encodeURIComponent('api/#')}`)
    assert.deepEqual(listed.body.data.map((r) => [r.topic, r.encoding]), [['api/pub/bin', 'base64'], ['api/retained/a', 'plain']])
    assert.equal(listed.body.data[0].payload, binary.toString('base64'))
    const one = await api<{ payload: string }>(n3(), 'GET', `/api/v1/retained/${encodeURIComponent('api/retained/a')}`)
    assert.deepEqual([one.status, one.body.payload], [200, 'A'])
    const before = got.length
    assert.equal((await api(n3(), 'DELETE', `/api/v1/retained/${encodeURIComponent('api/retained/a')}`)).status, 204)
    assert.equal((await api(n1(), 'GET', `/api/v1/retained/${encodeURIComponent('api/retained/a')}`)).status, 404)
    const late = await connect(n1(), { clientId: 'api-late', protocolVersion: 5 })
    const lateGot = collect(late)
    await late.subscribeAsync('api/retained/#')
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.deepEqual(lateGot, [], 'a new subscriber gets no deleted retained message')
    assert.equal(got.length, before, 'deleting sent no empty message to subscribers')
    await late.endAsync()
  } finally {
    await subscriber.endAsync()
  }
})

async function loginCode(node: RunningFleetmq, username: string, password: string, clientId?: string): Promise<number> {
  try {
    const client = await connect(node, { protocolVersion: 5, username, password, connectTimeout: 5_000, ...(clientId ? { clientId } : {}) })
    await client.endAsync()
    return 0
  } catch (err) {
    return (err as { code?: number }).code ?? -1
  }
}

test('users: added through node 1, a device logs in through node 3; a password change or removal closes its sessions', async () => {
  const created = await api<{ username: string; roles: string[] }>(n1(), 'POST', '/api/v1/users', { body: { username: 'api-dev', password: 'api-dev-password' } })
  assert.deepEqual([created.status, created.body.username, created.body.roles], [201, 'api-dev', []])
  assert.equal((await api(n1(), 'POST', '/api/v1/users', { body: { username: 'api-dev', password: 'api-dev-password' } })).status, 409)
  const short = await api(n1(), 'POST', '/api/v1/users', { body: { username: 'x', password: 'short' } })
  assert.deepEqual([short.status, short.body.field], [400, 'body.password'])
  await waitUntil('node 3 admits the new user', async () => (await loginCode(n3(), 'api-dev', 'api-dev-password')) === 0, 2_000)
  const listed = await api<Page<{ username: string }>>(n2(), 'GET', '/api/v1/users')
  assert.ok(listed.body.data.some((u) => u.username === 'api-dev'))
  assert.equal((await api(n2(), 'GET', '/api/v1/users/api-dev')).status, 200)

  const session = await connect(n3(), { clientId: 'api-dev-session', protocolVersion: 5, username: 'api-dev', password: 'api-dev-password' })
  const closed = nextEvent(session, 'close')
  const changed = await api(n2(), 'PATCH', '/api/v1/users/api-dev', { body: { password: 'api-dev-password-2' } })
  assert.equal(changed.status, 200)
  await closed
  assert.equal(await loginCode(n1(), 'api-dev', 'api-dev-password'), 0x86, 'the old password is refused')
  assert.equal(await loginCode(n1(), 'api-dev', 'api-dev-password-2'), 0)
  assert.equal((await api(n1(), 'DELETE', '/api/v1/users/api-dev')).status, 204)
  assert.equal((await api(n1(), 'GET', '/api/v1/users/api-dev')).status, 404)
  await waitUntil('node 2 refuses the removed user', async () => (await loginCode(n2(), 'api-dev', 'api-dev-password-2')) === 0x86, 2_000)
})

test('acl: the cluster\'s, replaced and edited through one node, read through another', async () => {
  const initial = await api<{ editable: boolean; rules: unknown[] }>(n2(), 'GET', '/api/v1/acl')
  assert.deepEqual([initial.status, initial.body.editable], [200, true])
  const set = await api<{ rules: unknown[] }>(n1(), 'PUT', '/api/v1/acl', { body: { default: 'deny', rules: [{ action: 'allow', permission: 'publish', topics: ['telemetry/%c/#'] }] } })
  assert.equal(set.status, 200)
  const added = await api<{ rules: { topics: string[] }[] }>(n3(), 'POST', '/api/v1/acl/rules', { body: { action: 'deny', topics: ['secret/#'] } })
  assert.equal(added.status, 201)
  const read = await api<{ rules: { topics: string[] }[] }>(n2(), 'GET', '/api/v1/acl')
  assert.deepEqual(read.body.rules.map((r) => r.topics), [['telemetry/%c/#'], ['secret/#']])
  const bad = await api(n1(), 'POST', '/api/v1/acl/rules', { body: { action: 'allow', topics: ['a/#/b'] } })
  assert.equal(bad.status, 400)
  assert.match(String(bad.body.field), /^body/)
  assert.equal((await api(n1(), 'DELETE', '/api/v1/acl/rules/7')).status, 404)
  const removed = await api<{ rules: unknown[] }>(n1(), 'DELETE', '/api/v1/acl/rules/1')
  assert.equal(removed.body.rules.length, 1)
  await api(n1(), 'PUT', '/api/v1/acl', { body: { default: 'deny', rules: [] } })
})

test('banned: a client id banned through node 1 is disconnected on node 3 and refused everywhere; a ban expires; lifting it lets the client back', async () => {
  const client = await connect(n3(), { clientId: 'api-banned', protocolVersion: 5 })
  const disconnected = nextEvent<[{ reasonCode?: number }]>(client, 'disconnect')
  const banned = await api<{ ban: { kind: string; value: string; until: null }; kicked: string[] }>(n1(), 'POST', '/api/v1/banned', { body: { kind: 'clientid', value: 'api-banned', reason: 'test' } })
  assert.equal(banned.status, 201)
  assert.deepEqual(banned.body.kicked, ['api-banned'])
  assert.equal(banned.body.ban.until, null)
  assert.equal((await disconnected)[0].reasonCode, 0x98)
  client.end(true)
  for (const node of nodes) {
    await assert.rejects(connect(node, { clientId: 'api-banned', protocolVersion: 5, connectTimeout: 5_000 }), (err: { code?: number }) => err.code === 0x8a, 'CONNACK 0x8A Banned')
  }
  assert.equal((await api(n2(), 'POST', '/api/v1/banned', { body: { kind: 'clientid', value: 'api-banned' } })).status, 409)
  const list = await api<Page<{ value: string }>>(n2(), 'GET', '/api/v1/banned')
  assert.ok(list.body.data.some((b) => b.value === 'api-banned'))
  assert.equal((await api(n2(), 'DELETE', '/api/v1/banned/clientid/api-banned')).status, 204)
  const back = await connect(n1(), { clientId: 'api-banned', protocolVersion: 5, connectTimeout: 5_000 })
  await back.endAsync()

  const brief = await api<{ ban: { until: string } }>(n1(), 'POST', '/api/v1/banned', { body: { kind: 'clientid', value: 'api-brief', duration: 1 } })
  assert.equal(brief.status, 201)
  await assert.rejects(connect(n2(), { clientId: 'api-brief', protocolVersion: 5, connectTimeout: 5_000 }))
  await new Promise((resolve) => setTimeout(resolve, Date.parse(brief.body.ban.until) - Date.now() + 50))
  const after = await connect(n2(), { clientId: 'api-brief', protocolVersion: 4, connectTimeout: 5_000 })
  await after.endAsync()
  const badAddress = await api(n1(), 'POST', '/api/v1/banned', { body: { kind: 'address', value: '300.1.2.3' } })
  assert.deepEqual([badAddress.status, badAddress.body.field], [400, 'body.value'])
  assert.equal((await api(n1(), 'DELETE', '/api/v1/banned/username/nobody')).status, 404)
})

test('apikeys: a viewer reads, an operator also kicks and publishes, only an admin manages users and keys; a removed key stops working on every node', async () => {
  const keys: Record<string, string> = {}
  for (const role of ['viewer', 'operator', 'admin']) {
    const made = await api<{ key: string; role: string; prefix: string }>(n1(), 'POST', '/api/v1/apikeys', { body: { name: `api-${role}`, role } })
    assert.equal(made.status, 201)
    assert.match(made.body.key, /^fmq_[A-Za-z0-9_-]{43}$/)
    assert.ok(made.body.key.startsWith(made.body.prefix))
    keys[role] = made.body.key
  }
  assert.equal((await api(n1(), 'POST', '/api/v1/apikeys', { body: { name: 'api-viewer', role: 'admin' } })).status, 409)
  const listed = await api<Page<Record<string, unknown>>>(n3(), 'GET', '/api/v1/apikeys')
  assert.ok(listed.body.data.every((k) => !('key' in k) && !('hash' in k)), 'neither a key nor its hash is ever listed')

  const publish = { body: { topic: 'api/keys', payload: 'x' } }
  assert.equal((await api(n2(), 'GET', '/api/v1/clients', { headers: bearer(keys.viewer) })).status, 200)
  const whoami = await api(n3(), 'GET', '/api/v1/whoami', { headers: bearer(keys.viewer) })
  assert.deepEqual(whoami.body, { username: null, roles: [], kind: 'apikey', name: 'api-viewer', role: 'viewer' })
  assert.equal((await api(n2(), 'GET', '/metrics', { headers: bearer(keys.viewer) })).status, 200, 'a viewer key scrapes metrics')
  const forbidden = await api(n2(), 'POST', '/api/v1/publish', { ...publish, headers: bearer(keys.viewer) })
  assert.deepEqual([forbidden.status, forbidden.body.code], [403, 'FORBIDDEN'])
  assert.match(String(forbidden.body.message), /needs the operator role; API key "api-viewer" has viewer/)
  assert.equal((await api(n2(), 'POST', '/api/v1/publish', { ...publish, headers: bearer(keys.operator) })).status, 200)
  assert.equal((await api(n2(), 'DELETE', '/api/v1/clients/nobody', { headers: bearer(keys.operator) })).status, 404, 'an operator may kick')
  assert.equal((await api(n2(), 'GET', '/api/v1/users', { headers: bearer(keys.operator) })).status, 403)
  assert.equal((await api(n2(), 'GET', '/api/v1/users', { headers: bearer(keys.admin) })).status, 200)
  assert.equal((await api(n2(), 'GET', '/api/v1/cluster/status', { headers: bearer(keys.admin) })).status, 200, 'an admin key opens the cluster routes')
  assert.equal((await api(n2(), 'GET', '/api/v1/cluster/status', { headers: bearer(keys.viewer) })).status, 401)
  assert.equal((await api(n2(), 'GET', '/api/v1/clients', { headers: bearer('fmq_not-a-key') })).status, 401)

  assert.equal((await api(n3(), 'DELETE', '/api/v1/apikeys/api-viewer', { headers: bearer(keys.admin) })).status, 204)
  await waitUntil('every node refuses the removed key', async () => {
    for (const node of nodes) if ((await api(node, 'GET', '/api/v1/clients', { headers: bearer(keys.viewer) })).status !== 401) return false
    return true
  }, 3_000)
  assert.equal((await api(n3(), 'DELETE', '/api/v1/apikeys/api-viewer')).status, 404)
})

test('CLI mirrors: clients list and kick, publish, retained list and delete, ban add/list/remove and apikey add/list/remove call the API', async () => {
  const local = (node: RunningFleetmq): string[] => ['--node', `127.0.0.1:${node.mgmtPort}`, '--data-dir', node.dir]
  const cli = async (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => runCli(args)

  const client = await connect(n2(), { clientId: 'cli-device', protocolVersion: 5 })
  const listed = await cli(['clients', 'list', '--clientid', 'cli-device', '--json', ...local(n1())])
  assert.equal(listed.code, 0, listed.stderr)
  assert.deepEqual((JSON.parse(listed.stdout) as Page<{ clientid: string }>).data.map((c) => c.clientid), ['cli-device'])
  const human = await cli(['clients', 'list', ...local(n1())])
  assert.match(human.stdout, /CLIENT ID\s+USERNAME\s+ADDRESS\s+NODE/)
  assert.match(human.stdout, /cli-device\s+-\s+127\.0\.0\.1/)
  const closed = nextEvent(client, 'close')
  const kick = await cli(['clients', 'kick', 'cli-device', ...local(n3())])
  assert.equal(kick.code, 0, kick.stderr)
  assert.match(kick.stdout, /disconnected cli-device \(it was on node /)
  await closed
  client.end(true)
  const missing = await cli(['clients', 'kick', 'cli-device', ...local(n3())])
  assert.equal(missing.code, 1)
  assert.match(missing.stderr, /no client "cli-device" is connected to any node/)

  const published = await cli(['publish', 'cli/retained', 'from the CLI', '--retain', '--qos', '1', '--user-property', 'k=v', '--json', ...local(n1())])
  assert.equal(published.code, 0, published.stderr)
  assert.deepEqual(JSON.parse(published.stdout), { topic: 'cli/retained', qos: 1, retain: true, bytes: 12 })
  const retained = await cli(['retained', 'list', 'cli/#', ...local(n2())])
  assert.match(retained.stdout, /cli\/retained\s+1\s+12\s+"from the CLI"/)
  assert.equal((await cli(['retained', 'delete', 'cli/retained', ...local(n3())])).code, 0)
  assert.match((await cli(['retained', 'list', 'cli/#', ...local(n2())])).stdout, /none of 0/)

  const ban = await cli(['ban', 'add', 'cli-bad', '--kind', 'username', '--for', '10m', '--reason', 'testing', ...local(n1())])
  assert.equal(ban.code, 0, ban.stderr)
  assert.match(ban.stdout, /banned username cli-bad until .* on every node; disconnected 0 clients/)
  assert.match((await cli(['ban', 'list', ...local(n2())])).stdout, /username\s+cli-bad\s+\S+\s+the node's management token\s+testing/)
  assert.equal((await cli(['ban', 'remove', 'cli-bad', '--kind', 'username', ...local(n3())])).code, 0)
  assert.equal(JSON.parse((await cli(['ban', 'list', '--json', ...local(n2())])).stdout).meta.count, 0)

  const added = await cli(['apikey', 'add', 'cli-key', '--role', 'viewer', ...local(n1())])
  assert.equal(added.code, 0, added.stderr)
  const key = added.stdout.split('\n')[0]
  assert.match(key, /^fmq_/)
  const keyFile = join(mkdtempSync(join(tmpdir(), 'fleetmq-key-')), 'key')
  writeFileSync(keyFile, `${key}\n`, { mode: 0o600 })
  const asViewer = await cli(['clients', 'list', '--node', `127.0.0.1:${n2().mgmtPort}`, '--api-key-file', keyFile, '--json'])
  assert.equal(asViewer.code, 0, asViewer.stderr)
  const refused = await cli(['publish', 'x', 'y', '--node', `127.0.0.1:${n2().mgmtPort}`, '--api-key-file', keyFile])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /needs the operator role/)
  assert.match((await cli(['apikey', 'list', ...local(n3())])).stdout, /cli-key\s+viewer\s+fmq_/)
  assert.equal((await cli(['apikey', 'remove', 'cli-key', ...local(n3())])).code, 0)
  const noToken = await cli(['clients', 'list', '--node', `127.0.0.1:${n2().mgmtPort}`, '--data-dir', join(n2().dir, 'elsewhere')])
  assert.equal(noToken.code, 1)
  assert.match(noToken.stderr, /authentication required.*no management token found/)
  for (const command of [['clients', 'list'], ['clients', 'kick'], ['publish'], ['retained', 'list'], ['retained', 'delete'], ['ban', 'add'], ['ban', 'list'], ['ban', 'remove'], ['apikey', 'add'], ['apikey', 'list'], ['apikey', 'remove']]) {
    const help = await cli([...command, '--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--json/, `${command.join(' ')} --help lists --json`)
  }
})

