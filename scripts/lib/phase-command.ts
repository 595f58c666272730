/*
 * The one command that runs a provisioning phase on a staged host. Pulumi's remote commands
 * (infra/provisioning.ts), scripts/join-node and the host tests (scripts/lib/remote-provision.ts)
 * all send exactly this; no dependencies, so infra/ imports it without pulling in ssh2.
 */

/** The entry point inside scripts/provision (uploaded as `<stage>/provision/`). */
export const PROVISION_ENTRY_POINT = 'fleetmq-provision'
/** Where every upload lands on a node. */
export const STAGE_DIR = '/var/tmp/fleetmq-stage'
export const NODE_ENV_PATH = `${STAGE_DIR}/node.env`

export const PROVISION_PHASES = ['install', 'configure', 'join', 'leave', 'upgrade', 'cleanup', 'validate'] as const
export type ProvisionPhase = (typeof PROVISION_PHASES)[number]

/**
 * `sudo bash <stage>/provision/fleetmq-provision <phase> --env <stage>/node.env --bundle <stage>/<bundle>`;
 * without `--bundle` when `bundleFileName` is '' (leave, cleanup and validate read no bundle).
 */
export function phaseCommand(phase: ProvisionPhase, bundleFileName: string): string {
  // The name goes into a shell command unquoted: only a plain file name is safe there.
  if (bundleFileName !== '' && !/^[A-Za-z0-9._-]+$/.test(bundleFileName)) throw new Error(`bundleFileName: "${bundleFileName}" must be a plain file name`)
  const bundle = bundleFileName === '' ? '' : ` --bundle ${STAGE_DIR}/${bundleFileName}`
  return `sudo bash ${STAGE_DIR}/provision/${PROVISION_ENTRY_POINT} ${phase} --env ${NODE_ENV_PATH}${bundle}`
}
