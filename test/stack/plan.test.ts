import { test } from 'node:test'
import assert from 'node:assert/strict'
import { allPorts, parseWith, planStack, renderHaproxyConfig } from '../../scripts/stack/plan.js'

test('the port plan gives every part its own port inside BASE..BASE+59', () => {
  for (const nodes of [1, 3, 9]) {
    const ports = allPorts(planStack(30_000, nodes, ['kafka']))
    assert.equal(new Set(ports).size, ports.length, `duplicate port with ${nodes} nodes`)
    assert.ok(ports.every((p) => p >= 30_000 && p < 30_060))
  }
})

test('bad --nodes and --ports values are refused with what is allowed', () => {
  const cases: [number, number, RegExp][] = [
    [21_000, 0, /--nodes must be a whole number from 1 to 9, got 0/],
    [21_000, 10, /--nodes .* got 10/],
    [21_000, 2.5, /--nodes .* got 2.5/],
    [80, 3, /--ports must be a whole number from 1024/],
    [65_500, 3, /--ports .* got 65500/],
  ]
  for (const [base, nodes, message] of cases) assert.throws(() => planStack(base, nodes), message)
})

test('HAProxy sends PROXY v2 to every node and terminates TLS on the mqtts and wss fronts only', () => {
  const plan = planStack(21_000, 3)
  const config = renderHaproxyConfig(plan, { pem: '/state/haproxy.pem', pidFile: '/state/haproxy.pid' })
  for (const node of plan.nodes) {
    assert.match(config, new RegExp(`server ${node.name} 127\\.0\\.0\\.1:${node.mqtt} send-proxy-v2`))
    assert.match(config, new RegExp(`server ${node.name} 127\\.0\\.0\\.1:${node.ws} send-proxy-v2`))
  }
  assert.match(config, /bind 127\.0\.0\.1:21001 ssl crt \/state\/haproxy\.pem/)
  assert.match(config, /bind 127\.0\.0\.1:21002 ssl crt \/state\/haproxy\.pem/)
  assert.match(config, /bind 127\.0\.0\.1:21000\n/)
  assert.match(config, /ssl-min-ver TLSv1\.2/)
})

test('--with takes kafka and names what is not built yet', () => {
  assert.deepEqual(parseWith('kafka'), ['kafka'])
  assert.deepEqual(parseWith('kafka,kafka'), ['kafka'])
  assert.equal(planStack(21_000, 3).kafka, undefined)
  assert.deepEqual(planStack(21_000, 3, ['kafka']).kafka, { port: 21_003, controller: 21_004 })
  assert.throws(() => parseWith('kafka,rabbitmq'), /--with takes kafka, got "rabbitmq" \(rabbitmq is not built yet\)/)
  assert.throws(() => parseWith('kafak'), /--with takes kafka, got "kafak"$/)
})
