import { test } from 'node:test'
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { brokerForFile, runCli } from '../helpers/fleetmq.js'
import { tokenOf } from '../cluster/nodes.js'

/*
 * Issue 20, items 1 and 2: one bad request must not take a node down, and the management API
 * trusts no address: every non-health route takes credentials, the Host header must name the node,
 * and a browser on another site cannot drive it.
 */

const file = brokerForFile({
  args: ['--allow-anonymous'],
  config: {
    allowAnonymous: true,
    listeners: [
      { type: 'mqtt', host: '127.0.0.1', port: 0 },
      { type: 'ws', host: '127.0.0.1', port: 0 },
    ],
  },
})

/** Sends raw bytes and resolves with whatever the server answered before it closed. */
function rawHttp(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1')
    let answer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { answer += chunk })
    socket.on('error', reject)
    socket.on('close', () => resolve(answer))
    socket.setTimeout(5_000, () => socket.destroy())
    socket.end(request)
  })
}

const mgmt = (path: string, init: RequestInit = {}): Promise<Response> => fetch(`http://127.0.0.1:${file.broker.mgmtPort}${path}`, init)

async function stillServes(): Promise<void> {
  assert.equal(file.broker.process.exitCode, null, 'the node process is still running')
  assert.equal((await mgmt('/healthz')).status, 200)
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${file.broker.ports.mqtt}`, { reconnectPeriod: 0, connectTimeout: 5_000 })
  await client.endAsync()
}

test('an unparsable request target is a 400 on the management port and a 404 on the WebSocket listener; the node keeps serving', async () => {
  for (let i = 0; i < 10; i++) {
    const onMgmt = await rawHttp(file.broker.mgmtPort as number, 'GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    assert.match(onMgmt, /^HTTP\/1\.1 400 /, onMgmt)
    const onWs = await rawHttp(file.broker.ports.ws, 'GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    assert.match(onWs, /^HTTP\/1\.1 404 /, onWs)
    const upgrade = await rawHttp(file.broker.ports.ws, 'GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    assert.match(upgrade, /^HTTP\/1\.1 404 /, upgrade)
  }
  await stillServes()
  assert.equal(file.broker.logs.filter((l) => /uncaught|unhandled/.test(l.msg)).length, 0, 'no exception escaped a handler')
})

test('cluster routes refuse a request from loopback without credentials, and take the node\'s management token', async () => {
  assert.equal((await mgmt('/api/v1/cluster/status')).status, 401)
  const leave = await mgmt('/api/v1/cluster/leave', { method: 'POST' })
  assert.equal(leave.status, 401, 'leave from loopback without credentials')
  assert.equal((await mgmt('/api/v1/cluster/status', { headers: { authorization: `Bearer ${'0'.repeat(64)}` } })).status, 401)
  const ok = await mgmt('/api/v1/cluster/status', { headers: tokenOf(file.broker) })
  assert.equal(ok.status, 200)
  assert.equal(((await ok.json()) as { cluster: unknown }).cluster, null)
  assert.equal((await mgmt('/metrics', { headers: tokenOf(file.broker) })).status, 200, 'the token opens every route an admin may use')
  assert.equal(statSync(join(file.broker.dir, 'mgmt.token')).mode & 0o777, 0o600)
})

test('fleetmq cluster status on the host reads the token from the data folder; without it the refusal names the fix', async () => {
  const node = `127.0.0.1:${file.broker.mgmtPort}`
  const withToken = await runCli(['cluster', 'status', '--node', node, '--data-dir', file.broker.dir, '--json'])
  assert.equal(withToken.code, 0, withToken.stderr)
  assert.equal((JSON.parse(withToken.stdout) as { cluster: unknown }).cluster, null)
  const elsewhere = await runCli(['cluster', 'status', '--node', node, '--data-dir', join(file.broker.dir, 'not-here')])
  assert.equal(elsewhere.code, 1)
  assert.match(elsewhere.stderr, /authentication required: .*management token \(Bearer, <dataDir>\/mgmt\.token/)
})

test('DNS rebinding and cross-site requests are refused even with valid credentials', async () => {
  const token = tokenOf(file.broker)
  const rebound = await rawHttp(file.broker.mgmtPort as number, `GET /api/v1/cluster/status HTTP/1.1\r\nHost: attacker.example:${file.broker.mgmtPort}\r\nAuthorization: ${token.authorization}\r\nConnection: close\r\n\r\n`)
  assert.match(rebound, /^HTTP\/1\.1 421 /, rebound)
  assert.match(rebound, /does not answer to the host name \\"attacker\.example\\"; use its IP address, or add the name to mgmt\.allowedHosts/)
  const fromPage = await mgmt('/api/v1/cluster/leave', { method: 'POST', headers: { ...token, origin: 'http://attacker.example', 'content-type': 'text/plain' }, body: 'x' })
  assert.equal(fromPage.status, 403)
  const fetchSite = await mgmt('/api/v1/cluster/status', { headers: { ...token, 'sec-fetch-site': 'cross-site' } })
  assert.equal(fetchSite.status, 403)
  const textPlain = await mgmt('/api/v1/cluster/join', { method: 'POST', headers: { ...token, 'content-type': 'text/plain' }, body: '{"seed":"127.0.0.1:1","secret":"x"}' })
  assert.equal(textPlain.status, 415)
  assert.match(((await textPlain.json()) as { error: string }).error, /Content-Type: application\/json/)
  // The node's own origin (its future dashboard) and IP-literal hosts pass the checks.
  const sameOrigin = await mgmt('/api/v1/cluster/status', { headers: { ...token, origin: `http://127.0.0.1:${file.broker.mgmtPort}` } })
  assert.equal(sameOrigin.status, 200)
  await stillServes()
})
