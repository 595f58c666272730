/*
 * Config ⇄ environment. `FLEETMQ_LIMITS__MAX_CONNECTIONS=5000` sets `limits.maxConnections`:
 * `__` separates levels, `_` separates words of a camelCase key. Values are JSON when they parse
 * as JSON (numbers, booleans, arrays, objects) and strings otherwise. Provisioning renders a node's
 * settings with `renderEnvFile`, so the env file and the schema can never disagree.
 */

export const ENV_PREFIX = 'FLEETMQ_'
/** Variables with the prefix that are not settings. */
const RESERVED = new Set(['FLEETMQ_CONFIG'])

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json | undefined }
export type ConfigTree = { [key: string]: Json | undefined }

const toCamel = (segment: string): string =>
  segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

const toScreaming = (key: string): string => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()

function parseValue(raw: string): Json {
  try {
    return JSON.parse(raw) as Json
  } catch {
    return raw
  }
}

/** The settings carried by `env`, as a nested object (empty when there are none). */
export function configFromEnv(env: NodeJS.ProcessEnv): ConfigTree {
  const tree: ConfigTree = {}
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || RESERVED.has(name) || raw === undefined) continue
    const path = name.slice(ENV_PREFIX.length).split('__').map(toCamel)
    let node: ConfigTree = tree
    for (const segment of path.slice(0, -1)) {
      const next = node[segment]
      if (typeof next !== 'object' || next === null || Array.isArray(next)) node[segment] = {}
      node = node[segment] as ConfigTree
    }
    node[path[path.length - 1]] = parseValue(raw)
  }
  return tree
}

/** An env file (`KEY=value` lines, systemd `EnvironmentFile=` syntax) holding `settings`. */
export function renderEnvFile(settings: ConfigTree, header = 'Rendered by FleetMQ from its config schema'): string {
  const lines: string[] = [`# ${header}`]
  const walk = (node: ConfigTree, prefix: string[]): void => {
    for (const [key, value] of Object.entries(node)) {
      if (value === undefined) continue
      const path = [...prefix, toScreaming(key)]
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
        walk(value, path)
        continue
      }
      // A string that is not JSON on its own is written raw; anything else as JSON, so that
      // a string such as "8883" stays a string when read back.
      const text = typeof value === 'string' && parseValue(value) === value ? value : JSON.stringify(value)
      if (/['\n]/.test(text)) {
        throw new Error(`${ENV_PREFIX}${path.join('__')}: values in an env file cannot hold a single quote or a newline`)
      }
      // Single quotes: both systemd's EnvironmentFile= and bash read the text verbatim.
      lines.push(`${ENV_PREFIX}${path.join('__')}='${text}'`)
    }
  }
  walk(settings, [])
  return `${lines.join('\n')}\n`
}

/** The variables of an env file as `renderEnvFile` writes it (`KEY='value'` or `KEY=value` lines, `#` comments). */
export function readEnvFile(text: string): Record<string, string> {
  const vars: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const match = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(?:'([^']*)'|"([^"]*)"|(.*?))\s*$/.exec(line)
    if (match && !line.trimStart().startsWith('#')) vars[match[1]] = match[2] ?? match[3] ?? match[4] ?? ''
  }
  return vars
}
