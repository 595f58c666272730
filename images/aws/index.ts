/*
 * The FleetMQ marketplace AMI: `cd images/aws && pulumi up` (see docs/images.md). Reads the stack
 * config, wires the one component, and exports the AMI id of every region.
 */
import { debianAmi } from '../../infra/ami.js'
import { loadAmiConfig } from './config.js'
import { MarketplaceAmi } from './marketplace-ami.js'

const config = loadAmiConfig()
const ami = new MarketplaceAmi('fleetmq-ami', {
  version: config.version,
  architecture: config.architecture,
  parentImage: await debianAmi(config.architecture),
  bundle: config.bundle,
  instanceType: config.instanceType,
  regions: config.regions,
  launchPermissionAccounts: config.launchPermissionAccounts,
  public: config.public,
  subnetId: config.subnetId,
})

export const amis = ami.amis
export const imageArn = ami.imageArn
export const inputsBucket = ami.bucket
