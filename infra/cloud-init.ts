import { stringify } from 'yaml'

/**
 * cloud-config of every VM: password logins off, root locked. No SSH host key travels in it:
 * user-data is readable by every local user through the instance metadata service (and is kept in
 * the Pulumi state), so the VM makes its own keys (cloud-init, or the FleetMQ image's first boot)
 * and Pulumi pins the public key the VM prints on its console (`consoleHostKeyScript`). With
 * `externalProvisioning` (broker nodes) it tells the FleetMQ image's first boot that Pulumi
 * provisions the node (`fleetmq: {provisioning: external}`), so first boot makes no secrets of its
 * own; the official Debian AMI has no first boot and ignores the key.
 */
export function nodeUserData(options: { externalProvisioning?: boolean } = {}): string {
  const document = {
    ...(options.externalProvisioning === true ? { fleetmq: { provisioning: 'external' } } : {}),
    ssh_pwauth: false,
    disable_root: true,
  }
  return `#cloud-config\n${stringify(document, { lineWidth: 0 })}`
}

/** `known_hosts` line: `<address> <type> <key>` (the comment dropped). */
export function knownHostsLine(address: string, publicKeyOpenssh: string): string {
  const [type, key] = publicKeyOpenssh.trim().split(/\s+/)
  return `${address} ${type} ${key}`
}

/**
 * The ed25519 host key in a VM's console output: cloud-init prints every public host key between
 * `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----` once the keys exist.
 * Lines may carry a prefix (`ec2: `, a timestamp). Undefined when the block or the key is missing.
 */
export function hostKeyFromConsole(output: string): string | undefined {
  const begin = output.lastIndexOf('-----BEGIN SSH HOST KEY KEYS-----')
  if (begin < 0) return undefined
  const end = output.indexOf('-----END SSH HOST KEY KEYS-----', begin)
  if (end < 0) return undefined
  const match = /ssh-ed25519 [A-Za-z0-9+/]+={0,3}/.exec(output.slice(begin, end))
  return match?.[0]
}

/**
 * A shell script for the operator's machine that waits (up to `timeoutSeconds`) until the VM's
 * console output (`aws ec2 get-console-output`, through the AWS API with the operator's own
 * credentials: a channel no one on the network can forge) shows its ed25519 host key, and prints
 * `ssh-ed25519 AAAA...`. `--latest` reads the output of a Nitro instance as it is written; older
 * types fall back to the buffered output, which can take minutes.
 */
export function consoleHostKeyScript(input: { region: string; instanceId: string; timeoutSeconds?: number }): string {
  const timeout = input.timeoutSeconds ?? 900
  return [
    'set -eu',
    `deadline=$(( $(date +%s) + ${timeout} ))`,
    'while :; do',
    `  out=$(aws ec2 get-console-output --region ${input.region} --instance-id ${input.instanceId} --latest --output text --query Output 2>/dev/null || aws ec2 get-console-output --region ${input.region} --instance-id ${input.instanceId} --output text --query Output 2>/dev/null || true)`,
    `  key=$(printf '%s\\n' "$out" | awk '/-----BEGIN SSH HOST KEY KEYS-----/ { inside = 1; key = ""; next } /-----END SSH HOST KEY KEYS-----/ { inside = 0; if (key != "") found = key; next } inside && match($0, /ssh-ed25519 [A-Za-z0-9+\\/]+=*/) { key = substr($0, RSTART, RLENGTH) } END { print found }')`,
    '  if [ -n "$key" ]; then printf \'%s\\n\' "$key"; exit 0; fi',
    `  if [ "$(date +%s)" -ge "$deadline" ]; then echo "${input.instanceId}: no SSH host key on its console within ${timeout} s (aws ec2 get-console-output); is the AWS CLI installed and did the VM boot?" >&2; exit 1; fi`,
    '  sleep 10',
    'done',
  ].join('\n')
}
