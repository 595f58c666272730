import { spawn } from 'node:child_process'
import { once } from 'node:events'

/** One progress line per step (the CLI prints them; tests collect them). */
export type Progress = (line: string) => void

export interface RunOptions {
  input?: string
  /** Lines of the command's output, as they come (for long phases). */
  onLine?: (line: string) => void
  allowFailure?: boolean
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command; throws with its output when it fails (unless `allowFailure`). */
export async function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  let partial = ''
  const lines = (chunk: string): void => {
    if (!options.onLine) return
    partial += chunk
    const all = partial.split('\n')
    partial = all.pop() ?? ''
    for (const line of all) options.onLine(line)
  }
  child.stdout.on('data', (d: Buffer) => { stdout += d; lines(d.toString()) })
  child.stderr.on('data', (d: Buffer) => { stderr += d; lines(d.toString()) })
  child.stdin.on('error', () => { /* the command does not read its input */ })
  child.stdin.end(options.input ?? '')
  const [code] = (await once(child, 'close')) as [number | null]
  if (partial && options.onLine) options.onLine(partial)
  if (code !== 0 && !options.allowFailure) {
    const output = `${stdout}${stderr}`.trim().split('\n').slice(-40).join('\n')
    throw new Error(`${command} ${args.join(' ')} failed (exit ${code}):\n${output}`)
  }
  return { code, stdout, stderr }
}
