import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Client as SshClient } from 'ssh2'
import { exec, runPhase, uploadStage, type ProvisionPhase, type SecretName } from '../../scripts/lib/remote-provision.js'
import { REPO_ROOT } from '../helpers/hosts.js'

/** Runs `command` as root on the host (through sudo, as the SSH user); its stdout, trimmed. */
export async function sudo(ssh: SshClient, command: string): Promise<string> {
  const result = await exec(ssh, `sudo bash -c ${JSON.stringify(command).replace(/\$/g, '\\$')}`)
  assert.equal(result.code, 0, `${command}: ${result.stderr}`)
  return result.stdout.trim()
}

/** Uploads the stage and runs `phases` in order, as pulumi up's remote commands do; their output. */
export async function provisionOver(ssh: SshClient, phases: ProvisionPhase[], stage: { envText: string; bundleFile: string; secrets: Partial<Record<SecretName, string>> }): Promise<string> {
  await uploadStage(ssh, { provisionDir: join(REPO_ROOT, 'scripts/provision'), ...stage })
  let output = ''
  for (const phase of phases) {
    const result = await runPhase(ssh, phase, stage.bundleFile.split('/').pop()!)
    output += result.stdout + result.stderr
  }
  return output
}
