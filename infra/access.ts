import { knownHostsLine } from './cloud-init.js'
import { PORTS } from './ports.js'

/** File names the operator commands below write the SSH key and known hosts to. */
export const KEY_FILE = 'fleetmq-ssh.key'
export const KNOWN_HOSTS_FILE = 'fleetmq-known-hosts'

/** `known_hosts` for the bastion (public address) and every node (private address). */
export function knownHosts(hosts: ReadonlyArray<{ address: string; publicKey: string }>): string {
  return `${hosts.map((h) => knownHostsLine(h.address, h.publicKey)).join('\n')}\n`
}

/**
 * Opens node 1's management API on https://127.0.0.1:18083 through the bastion. The tunnel ends on
 * the node itself, so the management port stays closed to everything but the other brokers.
 */
export function managementTunnelCommand(input: { user: string; bastion: string; node: string }): string {
  const ssh = `ssh -i ${KEY_FILE} -o UserKnownHostsFile=${KNOWN_HOSTS_FILE} -o StrictHostKeyChecking=yes`
  return [
    // umask first: the key is never readable by others, not even between the write and a chmod.
    `(umask 077 && rm -f ${KEY_FILE} && pulumi stack output --show-secrets sshPrivateKey > ${KEY_FILE})`,
    `pulumi stack output knownHosts > ${KNOWN_HOSTS_FILE}`,
    `${ssh} -o ProxyCommand="${ssh} -W %h:%p ${input.user}@${input.bastion}" -N -L ${PORTS.mgmt}:127.0.0.1:${PORTS.mgmt} ${input.user}@${input.node}`,
  ].join(' && ')
}
