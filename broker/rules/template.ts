import { toText } from './functions.js'
import type { RuleOutput } from './rule.js'

/*
 * Action templates, as EMQX writes them: `alerts/${clientid}`, `${t}`, `${payload.temp}`. A
 * placeholder names a field of the rule's output (its SELECT), with dots into nested objects;
 * strings go in as they are, other values as JSON, a missing field as nothing.
 */

export type Template = (output: RuleOutput) => string

/** Why `text` is not a template, or undefined when it is one. */
export function templateProblem(text: string): string | undefined {
  let i = 0
  while ((i = text.indexOf('${', i)) !== -1) {
    const end = text.indexOf('}', i)
    if (end === -1) return `'\${' at character ${i + 1} has no closing '}'`
    const name = text.slice(i + 2, end).trim()
    if (!/^[A-Za-z_$][\w$]*(?:\.[\w$]+)*$/.test(name)) return `'\${${name}}' at character ${i + 1} is not a field name (\${clientid}, \${payload.temp})`
    i = end + 1
  }
  return undefined
}

function lookup(output: RuleOutput, path: readonly string[]): unknown {
  let value: unknown = output
  for (const step of path) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, step)) return undefined
    value = (value as Record<string, unknown>)[step]
  }
  return value
}

/** Compiles a template that `templateProblem` accepted. */
export function compileTemplate(text: string): Template {
  const parts: (string | readonly string[])[] = []
  let last = 0
  for (const match of text.matchAll(/\$\{\s*([^}]*?)\s*\}/g)) {
    parts.push(text.slice(last, match.index))
    parts.push(match[1].split('.'))
    last = match.index + match[0].length
  }
  parts.push(text.slice(last))
  if (parts.length === 1) return () => text
  return (output) => {
    let out = ''
    for (const part of parts) out += typeof part === 'string' ? part : toText(lookup(output, part))
    return out
  }
}
