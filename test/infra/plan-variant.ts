/*
 * Child-process entry for config-errors.test.ts: plans the program with the config in
 * FLEETMQ_TEST_CONFIG (JSON) under mocks and prints one JSON line: the error, if any, and how
 * many resources were registered before it.
 */
import { runProgram, type MockOptions, type ProgramRun } from './harness.js'

const config = JSON.parse(process.env.FLEETMQ_TEST_CONFIG ?? '{}') as Record<string, string>
const options = JSON.parse(process.env.FLEETMQ_TEST_MOCKS ?? '{}') as MockOptions
let run: ProgramRun | undefined
let error: string | undefined
try {
  run = await runProgram(config, options)
} catch (err) {
  error = (err as Error).message
}
process.stdout.write(`${JSON.stringify({ error, resources: run?.resources.filter((r) => r.type !== 'pulumi:pulumi:Stack').length ?? 0 })}\n`)
process.exit(0)
