import { execFile } from 'node:child_process'

export interface ProgramResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a program, ended with SIGTERM after `timeoutMs`; resolves with its exit code (1 when it
 * was ended) and output, never rejects on a non-zero exit.
 */
export function runProgram(file: string, args: readonly string[], timeoutMs = 20_000): Promise<ProgramResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })
    })
  })
}
