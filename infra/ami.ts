import * as aws from '@pulumi/aws'
import type { Architecture, StackConfig } from './config.js'

/** The AWS account Debian publishes its official cloud images from. */
export const DEBIAN_OWNER = '136693071363'

/** `debian-12-amd64-20240717-1811`; the `backports` images do not match. */
export function debianImageName(architecture: Architecture): string {
  return `debian-12-${architecture === 'arm64' ? 'arm64' : 'amd64'}-*`
}

/** The newest official Debian 12 AMI of the region for an architecture. */
export async function debianAmi(architecture: Architecture): Promise<string> {
  const image = await aws.ec2.getAmi({
    owners: [DEBIAN_OWNER],
    mostRecent: true,
    filters: [
      { name: 'name', values: [debianImageName(architecture)] },
      { name: 'architecture', values: [architecture] },
      { name: 'virtualization-type', values: ['hvm'] },
      { name: 'root-device-type', values: ['ebs'] },
    ],
  })
  return image.id
}

/** The brokers' AMI: the official Debian 12 one, or an image of ours checked against the instance type. */
export async function brokerAmi(config: Pick<StackConfig, 'ami' | 'architecture' | 'instanceType'>): Promise<string> {
  if (config.ami.kind === 'debian-12') return debianAmi(config.architecture)
  const image = await aws.ec2.getAmi({ filters: [{ name: 'image-id', values: [config.ami.id] }] })
  if (image.architecture !== config.architecture) {
    throw new Error(
      `ami: ${config.ami.id} is built for ${image.architecture} but instanceType ${config.instanceType} is ${config.architecture}; ` +
        `build the image for ${config.architecture} (images/aws) or pick a matching instance type`,
    )
  }
  return image.id
}
