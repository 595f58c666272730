import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { parse as parseYaml } from 'yaml'
import type { z } from 'zod'
import { FleetmqError } from '../errors.js'
import { configFromEnv, type ConfigTree } from './env.js'
import { configSchema, type Config } from './schema.js'

export interface ConfigSources {
  /** A YAML or JSON file. */
  file?: string
  /** `FLEETMQ_…` overrides; pass `process.env`. */
  env?: NodeJS.ProcessEnv
  /** Settings from command-line flags; they win over the file and the environment. */
  flags?: ConfigTree
}

/** Deep merge of plain objects; arrays and scalars of `over` replace those of `base`. */
export function mergeTrees(base: ConfigTree, over: ConfigTree): ConfigTree {
  const out: ConfigTree = { ...base }
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue
    const prev = out[key]
    const bothObjects = [prev, value].every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))
    out[key] = bothObjects ? mergeTrees(prev as ConfigTree, value as ConfigTree) : value
  }
  return out
}

export function readConfigFile(file: string): ConfigTree {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new FleetmqError('CONFIG_UNREADABLE', `cannot read ${file}: ${(err as Error).message}; check the --config path`)
  }
  let data: unknown
  try {
    data = extname(file) === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new FleetmqError('CONFIG_INVALID', `${file} is not valid ${extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`)
  }
  if (data === null || data === undefined) return {}
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new FleetmqError('CONFIG_INVALID', `${file} must hold a mapping of settings at the top level`)
  }
  return data as ConfigTree
}

/** One line per problem: `limits.maxKeepAlive: expected a number ≥ 1, got 0`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const path = issue.path.length ? issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(top level)'
    return `${path}: ${issue.message}`
  })
}

/** Validates a merged settings tree: the config, or every problem found. */
export function validateConfig(tree: ConfigTree): { ok: true; config: Config } | { ok: false; errors: string[] } {
  const result = configSchema.safeParse(tree)
  if (!result.success) return { ok: false, errors: describeIssues(result.error.issues) }
  return { ok: true, config: deepFreeze(result.data) }
}

/** Defaults < file < environment < flags, validated once and frozen. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const fromFile = sources.file ? readConfigFile(sources.file) : {}
  const tree = mergeTrees(mergeTrees(fromFile, configFromEnv(sources.env ?? {})), sources.flags ?? {})
  const result = validateConfig(tree)
  if (!result.ok) {
    const where = sources.file ? ` (${sources.file}, FLEETMQ_* variables and flags)` : ''
    throw new FleetmqError('CONFIG_INVALID', `the configuration is invalid${where}; fix the settings below`, result.errors)
  }
  return result.config
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
