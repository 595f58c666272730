import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import net from 'node:net'
import mqtt from 'mqtt'
import { allPorts, planStack } from '../../scripts/stack/plan.js'
import { portsInUse } from '../../scripts/stack/processes.js'

const STACK = resolve(import.meta.dirname, '../../scripts/stack/main.ts')

interface Ready {
  ready: true
  readyInMs: number
  endpoints: { mqtt: string; mqtts: string; wss: string }
  dashboard: string
  caFile: string
  username: string
  password: string
  nodes: { name: string; mgmt: string; pid: number; logFile: string }[]
  stateDir: string
}

/*
 * Below Linux's ephemeral range (ip_local_port_range, 32768–60999 by default): the other test files
 * listen on port 0 and connect from ephemeral ports, and one of those once took a port of this
 * stack between its first start and its restart on the same ports (haproxy: address in use).
 */
const EPHEMERAL_LOW = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])

async function freeBase(): Promise<number> {
  for (;;) {
    const base = 10_000 + Math.floor(Math.random() * ((EPHEMERAL_LOW - 10_100) / 100)) * 100
    if ((await portsInUse(allPorts(planStack(base, 3)))).length === 0) return base
  }
}

async function startStack(stateDir: string, base: number): Promise<{ child: ChildProcess; ready: Ready; stderr: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', STACK, '--json', '--state-dir', stateDir, '--ports', String(base)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d })
  const ready = await new Promise<Ready>((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`stack not ready in 180 s:\n${stderr}`)), 180_000)
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d
      if (stdout.includes('\n')) {
        clearTimeout(timer)
        resolvePromise(JSON.parse(stdout) as Ready)
      }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`npm start exited with ${code}:\n${stderr}`)) })
  })
  return { child, ready, stderr: () => stderr }
}

async function stopStack(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode
  const exited = once(child, 'exit')
  child.kill('SIGINT')
  const [code] = (await exited) as [number | null]
  return code
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

test('npm start: TLS pub/sub through HAProxy across nodes, real client addresses, a node killed, a restart on the same state', { timeout: 600_000 }, async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'fleetmq-stack-'))
  const base = await freeBase()
  const first = await startStack(stateDir, base)
  const { ready } = first
  t.diagnostic(`npm start was ready in ${(ready.readyInMs / 1000).toFixed(1)} s`)
  try {
    assert.equal(ready.nodes.length, 3)
    assert.equal(ready.endpoints.mqtts, `mqtts://127.0.0.1:${base + 1}`)
    assert.equal(ready.dashboard, `${ready.nodes[0].mgmt}/`)
    assert.match(await (await fetch(ready.dashboard)).text(), /<title>FleetMQ dashboard<\/title>/)
    const signIn = await fetch(new URL('/ui/session', ready.dashboard), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: ready.username, password: ready.password }) })
    assert.equal(signIn.status, 200, 'the stack\'s admin signs in to the dashboard')
    assert.equal(statSync(join(stateDir, 'secrets', 'admin-password')).mode & 0o777, 0o600)
    const tls = { ca: readFileSync(ready.caFile), username: ready.username, password: ready.password, protocolVersion: 5 as const }

    await t.test('mosquitto_sub and mosquitto_pub over TLS through the load balancer', async () => {
      const [, port] = /:(\d+)$/.exec(ready.endpoints.mqtts)!
      const auth = ['-h', '127.0.0.1', '-p', port, '--cafile', ready.caFile, '-u', ready.username, '-P', ready.password, '-V', 'mqttv311']
      const sub = spawn('mosquitto_sub', [...auth, '-t', 'stack/mosquitto', '-C', '1', '-W', '30', '-q', '1'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      sub.stdout.on('data', (d: Buffer) => { out += d })
      // Publish until the subscriber (possibly on another node) has its subscription in place.
      const pub = setInterval(() => spawnSync('mosquitto_pub', [...auth, '-t', 'stack/mosquitto', '-m', 'via-haproxy', '-q', '1']), 500)
      const [code] = (await once(sub, 'exit')) as [number]
      clearInterval(pub)
      assert.equal(code, 0)
      assert.equal(out.trim(), 'via-haproxy')
    })

    await t.test('the nodes see the client\'s real address and port (PROXY v2), and round robin spreads clients over nodes', async () => {
      const clients = await Promise.all([0, 1, 2].map((i) => mqtt.connectAsync(ready.endpoints.mqtts, { ...tls, clientId: `stack-addr-${i}` })))
      const localPorts = clients.map((c) => (c.stream as net.Socket).localPort)
      await new Promise((r) => setTimeout(r, 500))
      const logs = ready.nodes.map((n) => readFileSync(n.logFile, 'utf8'))
      const nodesUsed = new Set<number>()
      for (const [i, localPort] of localPorts.entries()) {
        const node = logs.findIndex((log) => log.split('\n').some((line) => line.includes(`"clientId":"stack-addr-${i}"`) && line.includes(`"remotePort":${localPort}`)))
        assert.ok(node >= 0, `no node logged stack-addr-${i} from 127.0.0.1:${localPort}`)
        nodesUsed.add(node)
      }
      assert.ok(nodesUsed.size >= 2, 'three connections through round robin should reach at least two nodes')
      await Promise.all(clients.map((c) => c.endAsync()))
    })

    await t.test('kill -9 of a node: its clients reconnect through HAProxy and keep their sessions', async () => {
      const options = { ...tls, clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 500 }
      const subscribers = await Promise.all([0, 1, 2].map((i) => mqtt.connectAsync(ready.endpoints.mqtts, { ...options, clientId: `stack-persist-${i}` })))
      await Promise.all(subscribers.map((s) => s.subscribeAsync('stack/persist', { qos: 1 })))
      const received = subscribers.map(() => new Set<string>())
      subscribers.forEach((s, i) => s.on('message', (_t, payload) => received[i].add(payload.toString())))
      const victim = ready.nodes[1]
      process.kill(victim.pid, 'SIGKILL')
      const publisher = await mqtt.connectAsync(ready.endpoints.mqtts, { ...tls, clientId: 'stack-persist-pub', reconnectPeriod: 500 })
      const sent: string[] = []
      for (let i = 0; i < 20; i++) {
        sent.push(`m${i}`)
        await publisher.publishAsync('stack/persist', `m${i}`, { qos: 1 })
      }
      const deadline = Date.now() + 60_000
      while (Date.now() < deadline && !received.every((r) => sent.every((m) => r.has(m)))) await new Promise((r) => setTimeout(r, 250))
      for (const [i, r] of received.entries()) {
        assert.deepEqual(sent.filter((m) => !r.has(m)), [], `subscriber ${i} missed messages after node ${victim.name} was killed`)
      }
      await Promise.all([...subscribers, publisher].map((c) => c.endAsync(true)))
    })
  } finally {
    assert.equal(await stopStack(first.child), 0)
  }
  for (const node of ready.nodes) assert.equal(alive(node.pid), false, `${node.name} (pid ${node.pid}) still runs after Ctrl-C`)

  // The same state: same credentials, ready again.
  const second = await startStack(stateDir, base)
  try {
    assert.equal(second.ready.password, ready.password)
    const client = await mqtt.connectAsync(second.ready.endpoints.mqtts, { ca: readFileSync(second.ready.caFile), username: ready.username, password: ready.password })
    await client.endAsync()
  } finally {
    assert.equal(await stopStack(second.child), 0)
  }
})

test('npm start refuses a port in use, naming it and the fix', { timeout: 60_000 }, async () => {
  const base = await freeBase()
  const blocker = net.createServer().listen(base + 1, '127.0.0.1')
  await once(blocker, 'listening')
  try {
    const result = spawnSync(process.execPath, ['--import', 'tsx', STACK, '--state-dir', mkdtempSync(join(tmpdir(), 'fleetmq-stack-')), '--ports', String(base)], { encoding: 'utf8' })
    assert.equal(result.status, 1)
    assert.match(result.stderr, new RegExp(`ports in use: ${base + 1}; .*--ports BASE`))
  } finally {
    blocker.close()
  }
})
