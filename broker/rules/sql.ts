/*
 * The rule SQL, as EMQX users write it:
 *
 *   SELECT clientid, payload.temp AS t FROM "devices/+/telemetry" WHERE payload.temp > 30
 *
 * A hand-written lexer and recursive-descent parser into a small AST (evaluate.ts runs it). Every
 * syntax error names its line and column and what was expected there, so `fleetmq config check`
 * and `fleetmq rule test` can point at the mistake. The grammar (docs/rules.md has the same):
 *
 *   rule     := SELECT fields FROM source ("," source)* [WHERE expr] [";"]
 *   fields   := "*" | field ("," field)*
 *   field    := expr [AS name]
 *   source   := string                      a topic filter, or "$events/<event>"
 *   expr     := or
 *   or       := and (OR and)*
 *   and      := not (AND not)*
 *   not      := NOT not | compare
 *   compare  := sum [("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") sum | [NOT] IN "(" expr ("," expr)* ")"]
 *   sum      := product (("+" | "-") product)*
 *   product  := unary (("*" | "/" | DIV | MOD) unary)*
 *   unary    := "-" unary | primary
 *   primary  := number | string | TRUE | FALSE | NULL | path | call | "(" expr ")" | case
 *   path     := name ("." name | "[" integer "]")*
 *   call     := name "(" [expr ("," expr)*] ")"
 *   case     := CASE [expr] (WHEN expr THEN expr)+ [ELSE expr] END
 *
 * Keywords and function names are case-insensitive; strings take single or double quotes (a
 * quote doubled inside stands for itself).
 */

export interface Position {
  readonly line: number
  readonly column: number
}

export class RuleSyntaxError extends Error {
  constructor(
    readonly position: Position,
    readonly expected: string,
    readonly found: string,
  ) {
    super(`${position.line}:${position.column}: expected ${expected}, found ${found}`)
    this.name = 'RuleSyntaxError'
  }
}

export type Expr =
  | { readonly kind: 'literal'; readonly value: string | number | boolean | null }
  | { readonly kind: 'path'; readonly root: string; readonly steps: readonly (string | number)[]; readonly at: Position }
  | { readonly kind: 'call'; readonly name: string; readonly args: readonly Expr[]; readonly at: Position }
  | { readonly kind: 'unary'; readonly op: '-' | 'not'; readonly operand: Expr }
  | { readonly kind: 'binary'; readonly op: BinaryOp; readonly left: Expr; readonly right: Expr }
  | { readonly kind: 'in'; readonly negated: boolean; readonly operand: Expr; readonly list: readonly Expr[] }
  | { readonly kind: 'case'; readonly subject: Expr | undefined; readonly branches: readonly { when: Expr; then: Expr }[]; readonly otherwise: Expr | undefined }

export type BinaryOp = 'or' | 'and' | '=' | '!=' | '<' | '<=' | '>' | '>=' | '+' | '-' | '*' | '/' | 'div' | 'mod'

export interface SelectField {
  readonly expr: Expr
  /** Where the field goes in the output: the alias, a path's own steps, or the expression's text. */
  readonly name: readonly string[]
}

export interface RuleAst {
  /** `*`: every field of the message. */
  readonly all: boolean
  readonly fields: readonly SelectField[]
  /** Topic filters and `$events/...` names, as written. */
  readonly sources: readonly { readonly text: string; readonly at: Position }[]
  readonly where: Expr | undefined
}

type TokenKind = 'name' | 'number' | 'string' | 'symbol' | 'end'

interface Token {
  readonly kind: TokenKind
  /** Names and keywords as written; symbols as themselves; strings unquoted. */
  readonly text: string
  readonly at: Position
  /** Offsets into the source, for a field's name when it has no alias. */
  readonly start: number
  readonly end: number
}

const KEYWORDS = new Set(['select', 'from', 'where', 'as', 'and', 'or', 'not', 'in', 'case', 'when', 'then', 'else', 'end', 'true', 'false', 'null', 'div', 'mod'])
const SYMBOLS = ['<=', '>=', '!=', '<>', '=', '<', '>', '+', '-', '*', '/', '(', ')', ',', '.', '[', ']', ';']

function describe(token: Token): string {
  switch (token.kind) {
    case 'end': return 'the end of the rule'
    case 'string': return `the string '${token.text}'`
    case 'number': return `the number ${token.text}`
    default: return `'${token.text}'`
  }
}

function tokenize(source: string): Token[] {
  const tokens: Token[] = []
  let line = 1
  let lineStart = 0
  let i = 0
  const at = (offset: number): Position => ({ line, column: offset - lineStart + 1 })
  while (i < source.length) {
    const c = source[i]
    if (c === '\n') {
      i++
      line++
      lineStart = i
      continue
    }
    if (/\s/.test(c)) {
      i++
      continue
    }
    // `-- comment` to the end of the line, as in SQL.
    if (c === '-' && source[i + 1] === '-') {
      while (i < source.length && source[i] !== '\n') i++
      continue
    }
    const start = i
    if (/[A-Za-z_$]/.test(c)) {
      while (i < source.length && /[A-Za-z0-9_$]/.test(source[i])) i++
      tokens.push({ kind: 'name', text: source.slice(start, i), at: at(start), start, end: i })
      continue
    }
    if (/[0-9]/.test(c)) {
      const match = /^(?:\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(source.slice(i))
      const text = match?.[0] ?? c
      i += text.length
      if (i < source.length && /[A-Za-z_]/.test(source[i])) {
        throw new RuleSyntaxError(at(i), 'a digit, an operator or a space after a number', `'${source[i]}'`)
      }
      tokens.push({ kind: 'number', text, at: at(start), start, end: i })
      continue
    }
    if (c === "'" || c === '"') {
      let text = ''
      i++
      for (;;) {
        if (i >= source.length || source[i] === '\n') throw new RuleSyntaxError(at(start), `a closing ${c} for this string`, i >= source.length ? 'the end of the rule' : 'the end of the line')
        if (source[i] === c) {
          if (source[i + 1] === c) {
            text += c
            i += 2
            continue
          }
          i++
          break
        }
        text += source[i++]
      }
      tokens.push({ kind: 'string', text, at: at(start), start, end: i })
      continue
    }
    const symbol = SYMBOLS.find((s) => source.startsWith(s, i))
    if (!symbol) throw new RuleSyntaxError(at(i), 'a name, a number, a string or an operator', `'${c}'`)
    i += symbol.length
    tokens.push({ kind: 'symbol', text: symbol, at: at(start), start, end: i })
  }
  tokens.push({ kind: 'end', text: '', at: at(i), start: i, end: i })
  return tokens
}

class Parser {
  private index = 0
  constructor(private readonly tokens: readonly Token[], private readonly source: string) {}

  private get token(): Token {
    return this.tokens[this.index]
  }

  private atEnd(): boolean {
    return this.token.kind === 'end'
  }

  private isKeyword(word: string): boolean {
    return this.token.kind === 'name' && this.token.text.toLowerCase() === word
  }

  private isSymbol(symbol: string): boolean {
    return this.token.kind === 'symbol' && this.token.text === symbol
  }

  private fail(expected: string): never {
    throw new RuleSyntaxError(this.token.at, expected, describe(this.token))
  }

  private keyword(word: string, expected = word.toUpperCase()): Token {
    if (!this.isKeyword(word)) this.fail(expected)
    return this.tokens[this.index++]
  }

  private symbol(symbol: string, expected = `'${symbol}'`): Token {
    if (!this.isSymbol(symbol)) this.fail(expected)
    return this.tokens[this.index++]
  }

  rule(): RuleAst {
    this.keyword('select', 'SELECT')
    let all = false
    const fields: SelectField[] = []
    if (this.isSymbol('*')) {
      this.index++
      all = true
    } else {
      do fields.push(this.field())
      while (this.isSymbol(',') && ++this.index)
    }
    if (!this.isKeyword('from')) this.fail(fields.length ? "',', AS or FROM" : "'*' or a field")
    this.index++
    const sources: { text: string; at: Position }[] = []
    do {
      if (this.token.kind !== 'string') this.fail('a topic filter in double quotes ("devices/+/telemetry") or "$events/<event>"')
      sources.push({ text: this.token.text, at: this.token.at })
      this.index++
    } while (this.isSymbol(',') && ++this.index)
    let where: Expr | undefined
    if (this.isKeyword('where')) {
      this.index++
      where = this.expr()
    }
    if (this.isSymbol(';')) this.index++
    if (!this.atEnd()) this.fail(where ? 'an operator or the end of the rule' : "',', WHERE or the end of the rule")
    return { all, fields, sources, where }
  }

  private field(): SelectField {
    const first = this.token
    const expr = this.expr()
    if (this.isKeyword('as')) {
      this.index++
      const alias = this.token
      if (alias.kind !== 'name' && alias.kind !== 'string') this.fail('a name after AS')
      if (alias.kind === 'name' && KEYWORDS.has(alias.text.toLowerCase())) this.fail('a name after AS (not a keyword; quote it)')
      this.index++
      return { expr, name: alias.text.split('.') }
    }
    if (expr.kind === 'path' && expr.steps.every((s) => typeof s === 'string')) return { expr, name: [expr.root, ...(expr.steps as string[])] }
    return { expr, name: [this.source.slice(first.start, this.tokens[this.index - 1].end)] }
  }

  expr(): Expr {
    return this.or()
  }

  private or(): Expr {
    let left = this.and()
    while (this.isKeyword('or')) {
      this.index++
      left = { kind: 'binary', op: 'or', left, right: this.and() }
    }
    return left
  }

  private and(): Expr {
    let left = this.not()
    while (this.isKeyword('and')) {
      this.index++
      left = { kind: 'binary', op: 'and', left, right: this.not() }
    }
    return left
  }

  private not(): Expr {
    if (this.isKeyword('not')) {
      this.index++
      return { kind: 'unary', op: 'not', operand: this.not() }
    }
    return this.compare()
  }

  private compare(): Expr {
    const left = this.sum()
    const op = this.token.kind === 'symbol' ? this.token.text : ''
    if (['=', '!=', '<>', '<', '<=', '>', '>='].includes(op)) {
      this.index++
      return { kind: 'binary', op: op === '<>' ? '!=' : (op as BinaryOp), left, right: this.sum() }
    }
    const negated = this.isKeyword('not')
    if (negated) {
      this.index++
      if (!this.isKeyword('in')) this.fail('IN after NOT')
    }
    if (this.isKeyword('in')) {
      this.index++
      this.symbol('(', "'(' after IN")
      const list = [this.expr()]
      while (this.isSymbol(',')) {
        this.index++
        list.push(this.expr())
      }
      this.symbol(')', "',' or ')'")
      return { kind: 'in', negated, operand: left, list }
    }
    return left
  }

  private sum(): Expr {
    let left = this.product()
    while (this.isSymbol('+') || this.isSymbol('-')) {
      const op = this.tokens[this.index++].text as '+' | '-'
      left = { kind: 'binary', op, left, right: this.product() }
    }
    return left
  }

  private product(): Expr {
    let left = this.unary()
    for (;;) {
      let op: BinaryOp
      if (this.isSymbol('*')) op = '*'
      else if (this.isSymbol('/')) op = '/'
      else if (this.isKeyword('div')) op = 'div'
      else if (this.isKeyword('mod')) op = 'mod'
      else return left
      this.index++
      left = { kind: 'binary', op, left, right: this.unary() }
    }
  }

  private unary(): Expr {
    if (this.isSymbol('-')) {
      this.index++
      const operand = this.unary()
      if (operand.kind === 'literal' && typeof operand.value === 'number') return { kind: 'literal', value: -operand.value }
      return { kind: 'unary', op: '-', operand }
    }
    return this.primary()
  }

  private primary(): Expr {
    const token = this.token
    const expected = 'a value (a field, a number, a string, a function call or \'(\')'
    if (token.kind === 'number') {
      this.index++
      return { kind: 'literal', value: Number(token.text) }
    }
    if (token.kind === 'string') {
      this.index++
      return { kind: 'literal', value: token.text }
    }
    if (token.kind === 'symbol') {
      if (token.text !== '(') this.fail(expected)
      this.index++
      const inner = this.expr()
      this.symbol(')', "an operator or ')'")
      return inner
    }
    if (token.kind !== 'name') this.fail(expected)
    const word = token.text.toLowerCase()
    if (word === 'true' || word === 'false') {
      this.index++
      return { kind: 'literal', value: word === 'true' }
    }
    if (word === 'null') {
      this.index++
      return { kind: 'literal', value: null }
    }
    if (word === 'case') return this.caseExpr()
    if (KEYWORDS.has(word)) this.fail(expected)
    this.index++
    if (this.isSymbol('(')) {
      this.index++
      const args: Expr[] = []
      if (!this.isSymbol(')')) {
        args.push(this.expr())
        while (this.isSymbol(',')) {
          this.index++
          args.push(this.expr())
        }
      }
      this.symbol(')', "',' or ')'")
      return { kind: 'call', name: word, args, at: token.at }
    }
    const steps: (string | number)[] = []
    for (;;) {
      if (this.isSymbol('.')) {
        this.index++
        const step = this.token
        if (step.kind !== 'name' && step.kind !== 'number') this.fail('a field name after \'.\'')
        // payload.a.0 reads like a path step too; a number token such as 1.5 is not one.
        if (step.kind === 'number' && !/^\d+$/.test(step.text)) this.fail('a field name after \'.\'')
        steps.push(step.text)
        this.index++
      } else if (this.isSymbol('[')) {
        this.index++
        const step = this.token
        if (step.kind !== 'number' || !/^\d+$/.test(step.text) || Number(step.text) < 1) this.fail('a list index from 1 (payload.list[1] is the first item)')
        steps.push(Number(step.text))
        this.index++
        this.symbol(']', "']'")
      } else {
        return { kind: 'path', root: token.text, steps, at: token.at }
      }
    }
  }

  private caseExpr(): Expr {
    this.index++
    const subject = this.isKeyword('when') ? undefined : this.expr()
    const branches: { when: Expr; then: Expr }[] = []
    while (this.isKeyword('when')) {
      this.index++
      const when = this.expr()
      this.keyword('then', 'THEN')
      branches.push({ when, then: this.expr() })
    }
    if (branches.length === 0) this.fail('WHEN')
    let otherwise: Expr | undefined
    if (this.isKeyword('else')) {
      this.index++
      otherwise = this.expr()
    }
    this.keyword('end', branches.length ? 'WHEN, ELSE or END' : 'WHEN')
    return { kind: 'case', subject, branches, otherwise }
  }
}

/** The rule's AST, or a `RuleSyntaxError` naming the line, column and what was expected. */
export function parseRule(source: string): RuleAst {
  return new Parser(tokenize(source), source).rule()
}
