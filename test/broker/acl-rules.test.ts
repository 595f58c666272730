import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compileRules, covers, decide, expandTemplate, overlaps, parseFilter, sharedSubscriptionFilter, type AclSubject } from '../../broker/auth/acl-rules.js'
import { aclRuleSchema, configSchema, type AclRule } from '../../broker/config/schema.js'

const rule = (input: Record<string, unknown>): AclRule => aclRuleSchema.parse(input)
const alice: AclSubject = { username: 'alice', clientId: 'dev-1', address: '192.0.2.10', admin: false }

test('covers: a rule filter covers a subscription filter only when it matches every topic the subscription can match', () => {
  const cases: [rule: string, filter: string, expected: boolean][] = [
    ['sensors/alice/#', 'sensors/alice/+/temp', true],
    ['sensors/alice/#', 'sensors/alice', true], // '#' includes the parent level [MQTT-4.7.1-2]
    ['sensors/alice/#', 'sensors/#', false],
    ['sensors/alice/#', 'sensors/+/temp', false],
    ['sensors/+/temp', 'sensors/+/temp', true],
    ['sensors/+/temp', 'sensors/bob/temp', true],
    ['sensors/+/temp', 'sensors/+/#', false],
    ['sensors/+', 'sensors/+/x', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/b/c', false],
    ['a/b', 'a/#', false], // a/# matches a/b/c too
    ['a/+/#', 'a/#', false], // a/# matches a itself
    ['#', 'anything/at/all', true],
    ['#', '#', true],
    ['+/#', '+', true],
    ['#', '$SYS/broker/uptime', false], // [MQTT-4.7.2-1]
    ['+/broker/#', '$SYS/broker/x', false],
    ['$SYS/#', '$SYS/broker/+', true],
    ['a//b', 'a//b', true],
    ['a/+/b', 'a//b', true],
  ]
  for (const [r, f, expected] of cases) assert.equal(covers(parseFilter(r), parseFilter(f)), expected, `${r} covers ${f}`)
})

test('overlaps: a rule filter and a subscription filter share at least one topic', () => {
  const cases: [rule: string, filter: string, expected: boolean][] = [
    ['secret/#', '#', true],
    ['secret/#', '+/x', true],
    ['secret/#', 'public/#', false],
    ['secret/+/x', 'secret/a/+', true],
    ['secret/+/x', 'secret/a/y', false],
    ['a/b', 'a/#', true],
    ['a/b/c', 'a/+', false],
    ['$SYS/#', '#', false], // [MQTT-4.7.2-1]
    ['$SYS/#', '+/broker', false],
    ['$SYS/#', '$SYS/broker/+', true],
    ['#', '$SYS/x', false],
  ]
  for (const [r, f, expected] of cases) assert.equal(overlaps(parseFilter(r), parseFilter(f)), expected, `${r} overlaps ${f}`)
})

test('expandTemplate substitutes %u and %c as literal text, never as wildcards', () => {
  const literal = (...values: string[]) => values.map((value) => ({ kind: 'literal', value }))
  assert.deepEqual(expandTemplate('sensors/%u/%c', { username: 'alice', clientId: 'dev-1' }), literal('sensors', 'alice', 'dev-1'))
  assert.deepEqual(expandTemplate('d/x-%c-y', { username: 'alice', clientId: 'c' }), literal('d', 'x-c-y'))
  // Text around %c stays literal too, '%' included.
  assert.deepEqual(expandTemplate('d/%c', { clientId: '%u' }), literal('d', '%u'))
  // %u for an anonymous client: the template does not apply.
  assert.equal(expandTemplate('sensors/%u/#', { clientId: 'x' }), undefined)
})

test('expandTemplate refuses a client id or username with +, # or / (or an empty one): the template does not apply', () => {
  // devices/%c/# for client id 'a/#' would be devices/a/#/#, for 'a/b' a subtree of client a's devices/a/#.
  for (const clientId of ['a/#', '+', '#', 'a/b', '/', 'x+', 'y#', '']) {
    assert.equal(expandTemplate('devices/%c/#', { username: 'alice', clientId }), undefined, `client id ${JSON.stringify(clientId)}`)
    assert.equal(expandTemplate('users/%u/#', { username: clientId, clientId: 'dev-1' }), undefined, `username ${JSON.stringify(clientId)}`)
  }
  // A template without %c is not affected by the client id.
  assert.deepEqual(expandTemplate('users/%u/#', { username: 'alice', clientId: 'a/#' }), [{ kind: 'literal', value: 'users' }, { kind: 'literal', value: 'alice' }, { kind: 'multi' }])
})

test('decide, built-in rules after the configured ones: devices reach devices/%c/# and users/%u/#, admins and anonymous (allowAnonymous) clients every topic but $SYS', () => {
  const none = compileRules([])
  const device: AclSubject = { username: 'sensor-1', clientId: 'dev-1', admin: false }
  const cases: [subject: AclSubject, action: 'publish' | 'subscribe', topic: string, allowed: boolean, by: string][] = [
    [device, 'subscribe', 'devices/dev-1/#', true, 'built-in devices/%c/#'],
    [device, 'subscribe', 'devices/dev-1', true, 'built-in devices/%c/#'],
    [device, 'publish', 'devices/dev-1/up', true, 'built-in devices/%c/#'],
    [device, 'subscribe', 'users/sensor-1/+/inbox', true, 'built-in users/%u/#'],
    [device, 'publish', 'users/sensor-1/x', true, 'built-in users/%u/#'],
    [device, 'subscribe', '#', false, 'acl.default'],
    [device, 'subscribe', 'devices/+/up', false, 'acl.default'],
    [device, 'subscribe', 'devices/dev-2/#', false, 'acl.default'],
    [device, 'publish', 'devices/dev-2/cmd', false, 'acl.default'],
    [device, 'publish', 'users/sensor-2/x', false, 'acl.default'],
    [{ ...device, clientId: 'dev-1/#' }, 'subscribe', 'devices/dev-1/#', false, 'acl.default'],
    [{ ...device, clientId: 'dev-1/x' }, 'publish', 'devices/dev-1/x/up', false, 'acl.default'],
    [{ ...device, clientId: '+' }, 'subscribe', 'devices/+/#', false, 'acl.default'],
    [{ ...device, admin: true }, 'subscribe', '#', true, 'built-in admins'],
    [{ ...device, admin: true }, 'publish', 'devices/dev-2/cmd', true, 'built-in admins'],
    [{ ...device, admin: true }, 'subscribe', '$SYS/#', true, '$SYS (admins only)'],
    [{ ...device, admin: true }, 'publish', '$SYS/x', false, '$SYS (admins only)'],
    [{ clientId: 'dev-1', admin: false, anonymous: true }, 'subscribe', '#', true, 'built-in anonymous (allowAnonymous)'],
    [{ clientId: 'dev-1', admin: false, anonymous: true }, 'subscribe', '$SYS/#', false, '$SYS (admins only)'],
    // No identity at all (no username, not admitted as anonymous): only acl.default.
    [{ clientId: 'dev-1', admin: false }, 'publish', 'devices/dev-1/up', false, 'acl.default'],
  ]
  for (const [subject, action, topic, allowed, by] of cases) {
    assert.deepEqual(decide(none, 'deny', subject, action, topic), { allowed, by }, `${subject.username}/${subject.clientId} ${action} ${topic}`)
  }
  // Configured rules come first: a deny rule narrows the built-in ones, for admins too.
  const locked = compileRules([rule({ action: 'deny', permission: 'publish', topics: ['devices/+/config'] })])
  assert.deepEqual(decide(locked, 'deny', device, 'publish', 'devices/dev-1/config'), { allowed: false, by: 'acl.rules[0]' })
  assert.deepEqual(decide(locked, 'deny', { ...device, admin: true }, 'publish', 'devices/dev-1/config'), { allowed: false, by: 'acl.rules[0]' })
  assert.deepEqual(decide(locked, 'deny', device, 'publish', 'devices/dev-1/up'), { allowed: true, by: 'built-in devices/%c/#' })
})

test('decide: first matching rule wins, then built-in $SYS rules, then acl.default', () => {
  const rules = compileRules([
    rule({ action: 'deny', permission: 'publish', users: ['mallory'], topics: ['#'] }),
    rule({ action: 'allow', permission: 'subscribe', topics: ['sensors/%u/#'] }),
    rule({ action: 'allow', permission: 'publish', topics: ['devices/%c/up'] }),
    rule({ action: 'deny', permission: 'subscribe', topics: ['secret/#'] }),
    rule({ action: 'allow', permission: 'all', addresses: ['10.0.0.0/8', 'fd00::/8'], topics: ['internal/#'] }),
    rule({ action: 'allow', permission: 'subscribe', clientIds: ['monitor'], topics: ['#'] }),
  ])
  const cases: [subject: AclSubject, action: 'publish' | 'subscribe', topic: string, allowed: boolean, by: string][] = [
    [alice, 'subscribe', 'sensors/alice/+/temp', true, 'acl.rules[1]'],
    [alice, 'subscribe', 'sensors/bob/temp', false, 'acl.default'],
    [alice, 'subscribe', 'sensors/#', false, 'acl.default'],
    [alice, 'publish', 'devices/dev-1/up', true, 'acl.rules[2]'],
    [alice, 'publish', 'devices/dev-2/up', false, 'acl.default'],
    [{ ...alice, username: 'mallory' }, 'publish', 'devices/dev-1/up', false, 'acl.rules[0]'],
    [{ ...alice, clientId: 'monitor' }, 'subscribe', '#', false, 'acl.rules[3]'], // the deny on secret/# shares topics with '#'
    [{ ...alice, clientId: 'monitor' }, 'subscribe', 'public/#', true, 'acl.rules[5]'],
    [{ ...alice, address: '10.1.2.3' }, 'publish', 'internal/x', true, 'acl.rules[4]'],
    [{ ...alice, address: '::ffff:10.1.2.3' }, 'publish', 'internal/x', true, 'acl.rules[4]'],
    [{ ...alice, address: 'fd00::7' }, 'subscribe', 'internal/#', true, 'acl.rules[4]'],
    [{ ...alice, address: '192.0.2.10' }, 'publish', 'internal/x', false, 'acl.default'],
    [{ ...alice, address: undefined }, 'publish', 'internal/x', false, 'acl.default'],
    [{ ...alice, username: undefined }, 'subscribe', 'sensors/alice/x', false, 'acl.default'],
    [alice, 'subscribe', '$SYS/#', false, '$SYS (admins only)'],
    [{ ...alice, admin: true }, 'subscribe', '$SYS/broker/+', true, '$SYS (admins only)'],
    [{ ...alice, admin: true }, 'publish', '$SYS/broker/uptime', false, '$SYS (admins only)'],
  ]
  for (const [subject, action, topic, allowed, by] of cases) {
    assert.deepEqual(decide(rules, 'deny', subject, action, topic), { allowed, by }, `${subject.username}/${subject.clientId}@${subject.address} ${action} ${topic}`)
  }
  // With acl.default allow, what no rule names is allowed, but $SYS stays admin-only.
  assert.deepEqual(decide(rules, 'allow', alice, 'subscribe', 'other/topic'), { allowed: true, by: 'acl.default' })
  assert.deepEqual(decide(rules, 'allow', alice, 'subscribe', '$SYS/#'), { allowed: false, by: '$SYS (admins only)' })
  // A configured rule naming $SYS comes first.
  const sysForAll = compileRules([rule({ action: 'allow', permission: 'subscribe', topics: ['$SYS/broker/clients/#'] })])
  assert.deepEqual(decide(sysForAll, 'deny', alice, 'subscribe', '$SYS/broker/clients/connected'), { allowed: true, by: 'acl.rules[0]' })
})

test('shared subscriptions are checked on the filter they listen to', () => {
  assert.equal(sharedSubscriptionFilter('$share/group/sensors/#'), 'sensors/#')
  assert.equal(sharedSubscriptionFilter('$fleetmq/share/group/sensors/+/temp'), 'sensors/+/temp')
  assert.equal(sharedSubscriptionFilter('sensors/#'), 'sensors/#')
})

test('the config schema refuses bad addresses and topic filters in acl.rules, naming the path', () => {
  const result = configSchema.safeParse({
    acl: { rules: [{ action: 'allow', addresses: ['10.0.0.0/33', 'not-an-ip'], topics: ['a/#/b', 'x+/y'] }] },
  })
  assert.equal(result.success, false)
  const paths = result.error!.issues.map((i) => i.path.join('.'))
  assert.deepEqual(paths.sort(), ['acl.rules.0.addresses.0', 'acl.rules.0.addresses.1', 'acl.rules.0.topics.0', 'acl.rules.0.topics.1'])
  assert.ok(configSchema.safeParse({ acl: { rules: [{ action: 'deny', addresses: ['192.0.2.7', 'fd00::/8'], topics: ['sensors/%u/#', '+/x'] }] } }).success)
})
