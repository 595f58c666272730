/*
 * The EC2 Image Builder component (an AWSTOE document) that makes the FleetMQ AMI: the same steps,
 * in the same order, as the local qcow2 build (images/build.ts): the install phase, then
 * images/firstboot/install-image-files, then the cleanup and validate phases (validate --live: on
 * the builder instance itself, where the SSM agent still writes logs). Pure: the program
 * and its tests render it from the file lists below.
 */
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { stringify } from 'yaml'
import { FIRSTBOOT_FILES, IMAGE_FILES_SCRIPT, IMAGE_PROVISION_DIR, PROVISION_ENTRY } from '../customize.js'

/** Where the builder instance stages the downloads, as Pulumi's remote commands do on a node. */
export const STAGE_DIR = '/var/tmp/fleetmq-stage'

export interface StagedFiles {
  bucket: string
  bundleKey: string
  bundleFile: string
  /** Object keys of scripts/provision/** under `provision/`, and of images/firstboot/* under `firstboot/`. */
  provisionKeys: string[]
  firstbootKeys: string[]
}

/** Every file of a folder, as paths relative to it (sorted: stable documents and object names). */
export function filesUnder(dir: string): string[] {
  const out: string[] = []
  const walk = (current: string): void => {
    for (const name of readdirSync(current).sort()) {
      const path = join(current, name)
      if (statSync(path).isDirectory()) walk(path)
      else out.push(relative(dir, path))
    }
  }
  walk(dir)
  return out
}

export { FIRSTBOOT_FILES }

interface Step { name: string; action: string; inputs: unknown }

const bash = (name: string, ...commands: string[]): Step => ({ name, action: 'ExecuteBash', inputs: { commands: ['set -Eeuo pipefail', ...commands] } })

export function componentDocument(files: StagedFiles): string {
  const download = (key: string): { source: string; destination: string } => ({ source: `s3://${files.bucket}/${key}`, destination: `${STAGE_DIR}/${key}` })
  const provision = `${STAGE_DIR}/provision/${PROVISION_ENTRY}`
  const installed = `${IMAGE_PROVISION_DIR}/${PROVISION_ENTRY}`
  const steps: Step[] = [
    { name: 'Download', action: 'S3Download', inputs: [files.bundleKey, ...files.provisionKeys, ...files.firstbootKeys].map(download) },
    bash('Install', `bash ${provision} install --bundle ${STAGE_DIR}/${files.bundleKey}`),
    bash('ImageFiles', `bash ${STAGE_DIR}/firstboot/${IMAGE_FILES_SCRIPT} ${STAGE_DIR}`),
    // The stage goes first: cleanup and validate then see the image as instances will.
    bash('Cleanup', `rm -rf ${STAGE_DIR}`, `bash ${installed} cleanup`),
    // --live: this is the running builder instance, not a mounted image; the SSM agent that runs
    // these steps (and journald) keep logging after cleanup. validate --live names those logs
    // instead of failing on them, and fails when cleanup has not run in this boot. Image Builder
    // then removes the agent (systemsManagerAgent.uninstallAfterBuild) and its logs go with it.
    bash('Validate', `bash ${installed} validate --live`),
  ]
  return stringify({
    name: 'fleetmq-install',
    description: `FleetMQ ${files.bundleFile}: install, first boot, cleanup and validate (scripts/provision, images/firstboot)`,
    schemaVersion: 1.0,
    phases: [{ name: 'build', steps }],
  })
}
