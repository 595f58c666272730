import type * as aws from '@pulumi/aws'

/** IMDSv2 only, and a hop limit of 1 so containers on the host cannot reach the metadata service. */
export const METADATA_OPTIONS: aws.types.input.ec2.InstanceMetadataOptions = Object.freeze({
  httpEndpoint: 'enabled',
  httpTokens: 'required',
  httpPutResponseHopLimit: 1,
})

/** Encrypted gp3 root volume (the account's default EBS key unless one is set for the region). */
export function rootVolume(sizeGiB: number): aws.types.input.ec2.InstanceRootBlockDevice {
  return { volumeType: 'gp3', volumeSize: sizeGiB, encrypted: true, deleteOnTermination: true }
}
