import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'
import { freePort } from '../helpers/redis.js'
import { tokenOf } from '../cluster/nodes.js'

/*
 * A standalone node keeps its API keys and bans in its data folder: they survive a restart, and
 * its ACL (the config file's) is shown but not changed through the API.
 */

async function call(node: RunningFleetmq, method: string, path: string, body?: unknown, headers: Record<string, string> = tokenOf(node)): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${node.mgmtPort}${path}`, {
    method,
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

test('API keys and bans of a standalone node live in its data folder and survive a restart; its ACL is read only', async () => {
  const mqttPort = await freePort()
  const start = (dataDir?: string): Promise<RunningFleetmq> => startFleetmq({ ...(dataDir ? { dataDir } : {}), args: ['--allow-anonymous', '--mqtt', `127.0.0.1:${mqttPort}`] })
  let node = await start()
  const dir = node.dir
  try {
    const made = await call(node, 'POST', '/api/v1/apikeys', { name: 'ops', role: 'operator' })
    assert.equal(made.status, 201)
    const key = String(made.body.key)
    assert.equal((await call(node, 'POST', '/api/v1/banned', { kind: 'clientid', value: 'rogue' })).status, 201)
    assert.equal(statSync(join(dir, 'apikeys.json')).mode & 0o777, 0o600)
    assert.equal(statSync(join(dir, 'banned.json')).mode & 0o777, 0o600)
    const acl = await call(node, 'GET', '/api/v1/acl')
    assert.deepEqual([acl.status, acl.body.editable], [200, false])
    const change = await call(node, 'PUT', '/api/v1/acl', { default: 'allow', rules: [] })
    assert.equal(change.status, 409)
    assert.match(String(change.body.message), /standalone: its ACL is the acl section of its config file/)

    await node.stop()
    node = await start(dir)
    assert.equal((await call(node, 'GET', '/api/v1/clients', undefined, { authorization: `Bearer ${key}` })).status, 200, 'the key still works after a restart')
    await assert.rejects(mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { clientId: 'rogue', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5_000 }), (err: { code?: number }) => err.code === 0x8a)
    const other = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { clientId: 'fine', reconnectPeriod: 0, connectTimeout: 5_000 })
    await other.endAsync()
  } finally {
    await node.stop()
  }
})
