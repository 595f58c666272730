import { test } from 'node:test'
import assert from 'node:assert/strict'
import { OPENAPI } from '../../broker/api/openapi.js'
import { coerceParameter, SchemaResolver, type Schema } from '../../broker/api/validate.js'

/*
 * The management API's one validator against the schemas of its OpenAPI document: what a request
 * may hold, and the field a refusal names.
 */

const resolver = new SchemaResolver(OPENAPI.components.schemas as unknown as Record<string, Schema>)
const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` })

const CASES: { schema: string; value: unknown; field?: string; message?: RegExp }[] = [
  { schema: 'PublishRequest', value: { topic: 'a/b' } },
  { schema: 'PublishRequest', value: { topic: 'a/b', payload: 'x', encoding: 'base64', qos: 2, retain: true, properties: { userProperties: { k: 'v' }, messageExpiryInterval: 60 } } },
  { schema: 'PublishRequest', value: {}, field: 'body.topic', message: /body\.topic is required/ },
  { schema: 'PublishRequest', value: { topic: '' }, field: 'body.topic', message: /at least 1 character/ },
  { schema: 'PublishRequest', value: { topic: 'a', qos: 3 }, field: 'body.qos', message: /one of 0, 1, 2/ },
  { schema: 'PublishRequest', value: { topic: 'a', qos: 1.5 }, field: 'body.qos' },
  { schema: 'PublishRequest', value: { topic: 'a', retain: 'yes' }, field: 'body.retain', message: /must be a boolean, not string/ },
  { schema: 'PublishRequest', value: { topic: 'a', extra: 1 }, field: 'body.extra', message: /not a known field \(known: topic, payload/ },
  { schema: 'PublishRequest', value: { topic: 'a', properties: { userProperties: { k: 1 } } }, field: 'body.properties.userProperties.k' },
  { schema: 'PublishRequest', value: { topic: 'a', properties: { messageExpiryInterval: 0 } }, field: 'body.properties.messageExpiryInterval', message: /at least 1/ },
  { schema: 'PublishRequest', value: [], field: 'body', message: /must be an object, not array/ },
  { schema: 'PublishRequest', value: null, field: 'body' },
  { schema: 'UserCreate', value: { username: 'dev', password: '12345678' } },
  { schema: 'UserCreate', value: { username: 'dev', password: '1234567' }, field: 'body.password' },
  { schema: 'UserCreate', value: { username: 'a:b', password: '12345678' }, field: 'body.username', message: /must match/ },
  { schema: 'UserCreate', value: { username: '😀'.repeat(128), password: '12345678' } },
  { schema: 'UserUpdate', value: {}, field: 'body', message: /at least 1 of password, admin/ },
  { schema: 'AclRule', value: { action: 'allow', topics: ['sensors/%u/#'] } },
  { schema: 'AclRule', value: { action: 'allow', topics: ['a/#/b'] }, field: 'body.topics[0]' },
  { schema: 'AclRule', value: { action: 'allow', topics: [] }, field: 'body.topics', message: /at least 1 item/ },
  { schema: 'Acl', value: { default: 'deny', rules: [{ action: 'maybe', topics: ['x'] }] }, field: 'body.rules[0].action' },
  { schema: 'BanCreate', value: { kind: 'address', value: '10.0.0.0/8', duration: 60 } },
  { schema: 'BanCreate', value: { kind: 'ip', value: 'x' }, field: 'body.kind' },
  { schema: 'ApiKeyCreate', value: { name: 'ci.deploy-1', role: 'operator' } },
  { schema: 'ApiKeyCreate', value: { name: '-x', role: 'operator' }, field: 'body.name' },
]

for (const { schema, value, field, message } of CASES) {
  test(`${schema} ${JSON.stringify(value).slice(0, 80)}: ${field ? `refused at ${field}` : 'valid'}`, () => {
    const problem = resolver.validate(ref(schema), value, 'body')
    if (!field) return assert.equal(problem, undefined)
    assert.equal(problem?.field, field, problem?.message)
    if (message) assert.match(problem?.message ?? '', message)
  })
}

test('query and path text is coerced to the parameter\'s type, or refused naming it', () => {
  const limit = { type: 'integer', minimum: 1, maximum: 1000 }
  assert.deepEqual(coerceParameter(resolver, limit, '20', 'query.limit'), { value: 20 })
  assert.deepEqual(coerceParameter(resolver, limit, '2x', 'query.limit'), { field: 'query.limit', message: 'query.limit must be an integer, not "2x"' })
  assert.equal((coerceParameter(resolver, limit, '1.5', 'query.limit') as { field: string }).field, 'query.limit')
  assert.match((coerceParameter(resolver, limit, '0', 'query.limit') as { message: string }).message, /at least 1/)
  assert.deepEqual(coerceParameter(resolver, { type: 'string', enum: ['up', 'down'] }, 'up', 'query.status'), { value: 'up' })
})

test('a schema keyword the validator does not check is refused when the document is loaded', () => {
  assert.throws(() => new SchemaResolver({ X: { type: 'string', format: 'email', oneOf: [] } }), /uses "oneOf" at #\/components\/schemas\/X, which the validator does not check/)
  assert.throws(() => resolver.resolve(ref('Nope')), /refers to #\/components\/schemas\/Nope, which it does not define/)
})
