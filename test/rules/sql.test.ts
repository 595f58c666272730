import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileRule, RuleEvalError, RuleSyntaxError, type RuleInput } from '../../broker/rules/rule.js'
import { formatDate } from '../../broker/rules/functions.js'

const message = (payload: string, extra: Partial<RuleInput> = {}): RuleInput => ({
  event: 'message',
  clientid: 'd1',
  username: 'alice',
  topic: 'devices/d1/telemetry',
  qos: 1,
  retain: false,
  payload: Buffer.from(payload),
  timestamp: 1_700_000_000_123,
  node: 'n1',
  peerhost: '127.0.0.1',
  ...extra,
})

const run = (sql: string, payload = '{}', extra: Partial<RuleInput> = {}) => compileRule(sql).apply(message(payload, extra))

/** The error `compileRule(sql)` throws, as its message. */
function refusal(sql: string): string {
  try {
    compileRule(sql)
  } catch (err) {
    assert.ok(err instanceof RuleSyntaxError, `expected a RuleSyntaxError, got ${String(err)}`)
    return err.message
  }
  assert.fail(`accepted: ${sql}`)
}

describe('rule SQL: selecting and filtering', () => {
  it('the issue\'s example: fields, a payload path with an alias, and WHERE on the payload', () => {
    const sql = 'SELECT clientid, payload.temp AS t, timestamp FROM "devices/+/telemetry" WHERE payload.temp > 30'
    assert.deepEqual(run(sql, '{"temp":35}'), { clientid: 'd1', t: 35, timestamp: 1_700_000_000_123 })
    assert.equal(run(sql, '{"temp":20}'), undefined)
    assert.equal(run(sql, 'not json'), undefined, 'a payload that is not JSON has no payload.temp')
    assert.equal(run(sql, '{"humidity":3}'), undefined, 'a missing field compares as nothing')
  })

  it('FROM matches topic filters with + and #, several of them', () => {
    const rule = compileRule('SELECT * FROM "devices/+/telemetry", "alarms/#"')
    assert.deepEqual(rule.filters, ['devices/+/telemetry', 'alarms/#'])
    assert.ok(rule.matchesTopic('devices/x/telemetry'))
    assert.ok(rule.matchesTopic('alarms'))
    assert.ok(rule.matchesTopic('alarms/a/b'))
    assert.ok(!rule.matchesTopic('devices/x/y/telemetry'))
  })

  it('SELECT * gives every field, the payload as text', () => {
    assert.deepEqual(run('SELECT * FROM "#"', '{"a":1}'), {
      clientid: 'd1', username: 'alice', topic: 'devices/d1/telemetry', qos: 1, retain: false,
      payload: '{"a":1}', timestamp: 1_700_000_000_123, node: 'n1', peerhost: '127.0.0.1', event: 'message',
    })
  })

  it('nested payload paths keep their shape without an alias; list items count from 1', () => {
    assert.deepEqual(run('SELECT payload.a.b, payload.list[2] AS second FROM "#"', '{"a":{"b":"x"},"list":[10,20]}'), { payload: { a: { b: 'x' } }, second: 20 })
  })

  it('an expression without an alias is named by its text; WHERE may use an alias', () => {
    assert.deepEqual(run('SELECT upper(clientid), payload.t * 2 AS double FROM "#" WHERE double >= 10', '{"t":5}'), { 'upper(clientid)': 'D1', double: 10 })
    assert.equal(run('SELECT payload.t * 2 AS double FROM "#" WHERE double >= 10', '{"t":4}'), undefined)
  })

  it('arithmetic with precedence, div and mod, unary minus, and string joining with +', () => {
    assert.deepEqual(run('SELECT 1 + 2 * 3 AS a, (1 + 2) * 3 AS b, 7 div 2 AS c, 7 mod 4 AS d, -payload.x + 1 AS e, \'t=\' + payload.x AS f FROM "#"', '{"x":5}'),
      { a: 7, b: 9, c: 3, d: 3, e: -4, f: 't=5' })
    assert.deepEqual(run('SELECT payload.s + 1 AS n FROM "#"', '{"s":"41"}'), { n: 42 }, 'a numeric string is a number')
  })

  it('comparison, and/or/not, IN, and NOT IN', () => {
    const pass = (where: string, payload = '{"t":35,"s":"on"}') => run(`SELECT 1 AS x FROM "#" WHERE ${where}`, payload) !== undefined
    assert.ok(pass('payload.t > 30 and payload.s = \'on\''))
    assert.ok(!pass('payload.t > 30 and payload.s = "off"'))
    assert.ok(pass('payload.t < 30 or not (payload.s != \'on\')'))
    assert.ok(pass('payload.t <> 34'))
    assert.ok(pass('payload.t >= 35 AND payload.t <= 35'))
    assert.ok(pass('clientid in (\'d0\', \'d1\')'))
    assert.ok(pass('clientid not in (\'d0\', \'d2\')'))
    assert.ok(!pass('payload.missing not in (1)'), 'a missing field is in no list and outside none')
    assert.ok(pass('topic = \'devices/d1/telemetry\' AND qos = 1 AND retain = false'))
    assert.ok(!pass('payload.t > \'abc\''), 'a number and a non-numeric string do not compare')
  })

  it('CASE in both forms', () => {
    const sql = `SELECT CASE WHEN payload.t > 30 THEN 'hot' WHEN payload.t > 10 THEN 'warm' ELSE 'cold' END AS level,
                        CASE payload.s WHEN 'on' THEN 1 WHEN 'off' THEN 0 END AS state FROM "#"`
    assert.deepEqual(run(sql, '{"t":35,"s":"on"}'), { level: 'hot', state: 1 })
    assert.deepEqual(run(sql, '{"t":15,"s":"off"}'), { level: 'warm', state: 0 })
    assert.deepEqual(run(sql, '{"t":0,"s":"?"}'), { level: 'cold' }, 'no branch and no ELSE: the field is left out')
  })

  it('keywords and function names in any case, comments, a final semicolon', () => {
    assert.deepEqual(run('select UPPER(clientid) as C from "#" where TRUE -- all\n;'), { C: 'D1' })
  })
})

describe('rule SQL: functions', () => {
  const value = (expr: string, payload = '{}') => run(`SELECT ${expr} AS v FROM "#"`, payload)?.v

  it('strings', () => {
    assert.equal(value("upper('aB')"), 'AB')
    assert.equal(value("lower('aB')"), 'ab')
    assert.equal(value("concat(clientid, '-', qos)"), 'd1-1')
    assert.equal(value("substr('abcdef', 2)"), 'cdef')
    assert.equal(value("substr('abcdef', 2, 3)"), 'cde')
    assert.equal(value("trim('  x ')"), 'x')
    assert.equal(value("replace('a-b-c', '-', '+')"), 'a+b+c')
    assert.equal(value("strlen('héllo')"), 5)
  })

  it('math and conversions', () => {
    assert.equal(value('abs(-3)'), 3)
    assert.equal(value('round(2.5)'), 3)
    assert.equal(value('round(3.14159, 2)'), 3.14)
    assert.equal(value('floor(2.7)'), 2)
    assert.equal(value('ceil(2.1)'), 3)
    assert.equal(value('sqrt(16)'), 4)
    assert.equal(value("int('42.9')"), 42)
    assert.equal(value("float('1.5')"), 1.5)
    assert.equal(value('str(payload.a)', '{"a":{"b":1}}'), '{"b":1}')
  })

  it('time', () => {
    const before = Math.floor(Date.now() / 1000)
    const now = value('now_timestamp()') as number
    assert.ok(now >= before && now <= before + 2)
    assert.ok(Math.abs((value("now_timestamp('millisecond')") as number) - Date.now()) < 2_000)
    assert.equal(value("format_date('second', '+08:00', '%Y-%m-%d %H:%M:%S%:z', 1678938540)"), '2023-03-16 11:49:00+08:00')
    assert.equal(value("format_date('millisecond', 'Z', '%Y-%m-%dT%H:%M:%S.%3NZ', timestamp)"), '2023-11-14T22:13:20.123Z')
    assert.equal(formatDate('second', '-05:30', '%H:%M %z %%', 0), '18:30 -0530 %')
  })

  it('JSON and base64', () => {
    assert.equal(value('json_encode(payload.a)', '{"a":{"b":[1,2]}}'), '{"b":[1,2]}')
    assert.deepEqual(value("json_decode('{\"x\":1}')"), { x: 1 })
    assert.deepEqual(value('json_decode(payload.inner)', '{"inner":"{\\"t\\":1}"}'), { t: 1 })
    assert.equal(value("base64_encode('hello')"), 'aGVsbG8=')
    assert.equal(value("base64_decode('aGVsbG8=')"), 'hello')
  })

  it('a failing function or operator throws a RuleEvalError that names it', () => {
    const error = (expr: string, payload = '{}') => assert.throws(() => value(expr, payload), RuleEvalError)
    error("json_decode('{')")
    error("base64_decode('%%%')")
    error('sqrt(-1)')
    error('1 / 0')
    error("upper(payload.o)", '{"o":{}}')
    assert.throws(() => value('payload.missing * 2'), /'\*' needs numbers, got a missing field/)
    assert.throws(() => value("abs('x')"), /abs: expected a number, got string 'x'/)
  })
})

describe('rule SQL: refusals name the line, the column and what was expected', () => {
  it('syntax errors', () => {
    const cases: [sql: string, message: string][] = [
      ['', "1:1: expected SELECT, found the end of the rule"],
      ['SELEC x FROM "t"', "1:1: expected SELECT, found 'SELEC'"],
      ['SELECT FROM "t"', "1:8: expected a value (a field, a number, a string, a function call or '('), found 'FROM'"],
      ['SELECT clientid "t"', "1:17: expected ',', AS or FROM, found the string 't'"],
      ['SELECT clientid FROM t', '1:22: expected a topic filter in double quotes ("devices/+/telemetry") or "$events/<event>", found \'t\''],
      ['SELECT clientid FROM "t" WHER qos = 1', "1:26: expected ',', WHERE or the end of the rule, found 'WHER'"],
      ['SELECT clientid FROM "t"\nWHERE qos = = 1', "2:13: expected a value (a field, a number, a string, a function call or '('), found '='"],
      ['SELECT clientid FROM "t" WHERE qos = 1 qos', "1:40: expected an operator or the end of the rule, found 'qos'"],
      ['SELECT upper(clientid FROM "t"', "1:23: expected ',' or ')', found 'FROM'"],
      ['SELECT (1 + 2 FROM "t"', "1:15: expected an operator or ')', found 'FROM'"],
      ["SELECT 'abc FROM \"t\"", "1:8: expected a closing ' for this string, found the end of the rule"],
      ['SELECT CASE WHEN qos = 1 THEN 1 FROM "t"', "1:33: expected WHEN, ELSE or END, found 'FROM'"],
      ['SELECT CASE qos END FROM "t"', "1:17: expected WHEN, found 'END'"],
      ['SELECT clientid AS from FROM "t"', "1:20: expected a name after AS (not a keyword; quote it), found 'from'"],
      ['SELECT payload.list[0] FROM "t"', "1:21: expected a list index from 1 (payload.list[1] is the first item), found the number 0"],
      ['SELECT qos # 1 FROM "t"', "1:12: expected a name, a number, a string or an operator, found '#'"],
      ['SELECT 12ab FROM "t"', "1:10: expected a digit, an operator or a space after a number, found 'a'"],
      ['SELECT qos FROM "t" WHERE qos NOT 1', "1:35: expected IN after NOT, found the number 1"],
    ]
    for (const [sql, message] of cases) assert.equal(refusal(sql), message, sql)
  })

  it('unknown names, argument counts, topic filters and events', () => {
    assert.match(refusal('SELECT uper(clientid) FROM "t"'), /^1:8: expected a known function \(upper, lower, .*\), found 'uper'$/)
    assert.equal(refusal('SELECT upper(clientid, 1) FROM "t"'), '1:8: expected 1 argument for upper, found 2')
    assert.equal(refusal('SELECT substr(clientid) FROM "t"'), '1:8: expected 2 to 3 arguments for substr, found 1')
    assert.equal(refusal('SELECT concat(clientid) FROM "t"'), '1:8: expected at least 2 arguments for concat, found 1')
    assert.match(refusal('SELECT paylod.temp FROM "t"'), /^1:8: expected a field \(clientid, username, topic, .*\), found 'paylod'$/)
    assert.equal(refusal('SELECT clientid.x FROM "t"'), "1:8: expected a field without '.' or '[' after it (only payload has inner fields), found 'clientid.'")
    assert.match(refusal('SELECT payload.t AS t FROM "t" WHERE tt > 1'), /^1:38: expected a field \(.*\) or an alias \(t\), found 'tt'$/)
    assert.equal(refusal('SELECT * FROM "a/#/b"'), `1:15: expected a topic filter with '+' and '#' only as whole levels and '#' only last (devices/+/telemetry), found "a/#/b"`)
    assert.equal(refusal('SELECT * FROM "a/b+"'), `1:15: expected a topic filter with '+' and '#' only as whole levels and '#' only last (devices/+/telemetry), found "a/b+"`)
    assert.match(refusal('SELECT * FROM "t", "$events/message_acked"'), /^1:20: expected one of "\$events\/client_connected", .* \(\$events\/message_acked is not built yet\), found "\$events\/message_acked"$/)
    assert.match(refusal('SELECT * FROM "$events/nope"'), /^1:15: expected one of .*, found "\$events\/nope"$/)
  })

  it('property: any prefix of a valid rule that is not itself valid is refused with a position inside it (never a crash)', () => {
    const sql = 'SELECT clientid, payload.temp AS t, CASE WHEN qos = 1 THEN upper(\'x\') ELSE \'y\' END AS c FROM "devices/+/telemetry", "$events/client_connected" WHERE payload.temp > 30 and not (clientid in (\'a\', \'b\'))'
    compileRule(sql)
    for (let end = 0; end < sql.length; end++) {
      const prefix = sql.slice(0, end)
      let error: unknown
      try {
        compileRule(prefix)
        continue
      } catch (err) {
        error = err
      }
      assert.ok(error instanceof RuleSyntaxError, `${prefix}: ${String(error)}`)
      assert.equal(error.position.line, 1)
      assert.ok(error.position.column >= 1 && error.position.column <= end + 1, `${prefix}: column ${error.position.column}`)
    }
  })

  it('property: random token soup is refused with a RuleSyntaxError or compiles, never anything else', () => {
    const pieces = ['SELECT', 'FROM', 'WHERE', 'AS', 'CASE', 'WHEN', 'THEN', 'ELSE', 'END', 'and', 'or', 'not', 'in', '(', ')', ',', '.', '[1]', '+', '-', '*', '/', '=', '<', '>=', 'clientid', 'payload', 'temp', 'upper', '"t/#"', "'s'", '1', '2.5', ';', '\n']
    let seed = 7
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31)
    for (let i = 0; i < 3_000; i++) {
      const n = 1 + (next() % 14)
      const sql = Array.from({ length: n }, () => pieces[next() % pieces.length]).join(' ')
      try {
        compileRule(sql)
      } catch (err) {
        assert.ok(err instanceof RuleSyntaxError, `${sql}: ${String(err)}`)
      }
    }
  })
})
