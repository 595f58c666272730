import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { resolve } from 'node:path'
import { spawnPinned } from './brokers.js'
import { RELEASE, type GeneratorEvent, type Job, type JobResult } from './jobs.js'

/*
 * Runs one job in a fresh generator process pinned to `cpus`, apart from the driver, so that the
 * driver's bookkeeping never shares an event loop with the load.
 */

const GENERATOR = resolve(import.meta.dirname, 'generator.ts')

export interface RunJobOptions {
  readonly cpus: string
  /** For idle jobs: called while the connections are held; they close when it resolves. */
  readonly whileHolding?: (connected: number) => Promise<void>
}

export async function runJob(job: Job, options: RunJobOptions): Promise<JobResult> {
  const child = spawnPinned(options.cpus, process.execPath, ['--import', 'tsx', GENERATOR])
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-8_192) })
  const exited = once(child, 'exit')
  child.stdin?.write(`${JSON.stringify(job)}\n`)
  let result: JobResult | undefined
  for await (const line of createInterface({ input: child.stdout! })) {
    const event = JSON.parse(line) as GeneratorEvent
    if (event.event === 'holding') {
      await options.whileHolding?.(event.connected)
      child.stdin?.write(`${RELEASE}\n`)
    } else {
      result = event.result
    }
  }
  const [code] = (await exited) as [number | null]
  if (code !== 0 || !result) throw new Error(`the load generator failed (exit ${code}) on a ${job.kind} job:\n${stderr}`)
  return result
}
