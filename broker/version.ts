import { readFileSync } from 'node:fs'

/**
 * FleetMQ's version from package.json, found by walking up from this module: it sits one level
 * higher in the compiled tree (build/broker) than in the sources (broker), and the bundle keeps
 * the compiled layout.
 */
function readVersion(): string {
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'fleetmq' && typeof pkg.version === 'string') return pkg.version
    } catch {
      // not at this depth
    }
  }
  return '0.0.0-unknown'
}

export const FLEETMQ_VERSION = readVersion()
