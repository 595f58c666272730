import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'
import * as tls from '@pulumi/tls'
import type { CertificateSource } from './config.js'

export interface CertificateArgs {
  source: CertificateSource
  region: string
  /** The NLB's static addresses: the self-signed certificate names them, so devices may connect by IP. */
  publicIps: readonly pulumi.Input<string>[]
}

/** DNS suffix of NLB names in a region: the self-signed certificate covers `*.<suffix>`. */
export function loadBalancerDnsSuffix(region: string): string {
  return region.startsWith('cn-') ? `elb.${region}.amazonaws.com.cn` : `elb.${region}.amazonaws.com`
}

/** One year: the self-signed pair is for trying FleetMQ, not for a fleet. */
const SELF_SIGNED_VALIDITY_HOURS = 24 * 365

/**
 * The certificate of the NLB's TLS listeners, from one of three sources: an ACM certificate you
 * already have, one ACM issues for `domainName` and validates through Route 53, or a private CA
 * and server certificate made by Pulumi and imported into ACM (for testing: devices must be given
 * the CA, and it expires in a year).
 */
export class Certificate extends pulumi.ComponentResource {
  readonly certificateArn: pulumi.Output<string>
  /** PEM of the CA devices must trust; undefined when a public CA (Amazon) signs the certificate. */
  readonly deviceCaPem: pulumi.Output<string> | undefined

  constructor(name: string, args: CertificateArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:Certificate', name, {}, opts)
    const source = args.source
    switch (source.kind) {
      case 'arn':
        this.certificateArn = pulumi.output(source.arn)
        this.deviceCaPem = undefined
        break
      case 'acm-dns': {
        const certificate = new aws.acm.Certificate(
          name,
          { domainName: source.domainName, validationMethod: 'DNS', keyAlgorithm: 'RSA_2048', tags: { Name: name } },
          { parent: this },
        )
        const option = certificate.domainValidationOptions[0]
        const record = new aws.route53.Record(
          `${name}-validation`,
          {
            zoneId: source.hostedZoneId,
            name: option.resourceRecordName,
            type: option.resourceRecordType,
            records: [option.resourceRecordValue],
            ttl: 300,
            allowOverwrite: true,
          },
          { parent: this },
        )
        const validation = new aws.acm.CertificateValidation(
          name,
          { certificateArn: certificate.arn, validationRecordFqdns: [record.fqdn] },
          { parent: this },
        )
        this.certificateArn = validation.certificateArn
        this.deviceCaPem = undefined
        break
      }
      case 'self-signed': {
        pulumi.log.warn(
          'no certificateArn or domainName + hostedZoneId: the NLB gets a self-signed certificate for testing only. ' +
            'Devices must trust the deviceCa output, and the certificate expires in a year. Set domainName and hostedZoneId for production.',
          this,
        )
        const caKey = new tls.PrivateKey(`${name}-ca-key`, { algorithm: 'RSA', rsaBits: 2048 }, { parent: this })
        const caCert = new tls.SelfSignedCert(
          `${name}-ca`,
          {
            privateKeyPem: caKey.privateKeyPem,
            isCaCertificate: true,
            subject: { commonName: `${name} test CA`, organization: 'FleetMQ' },
            validityPeriodHours: SELF_SIGNED_VALIDITY_HOURS,
            allowedUses: ['cert_signing', 'crl_signing'],
          },
          { parent: this },
        )
        const serverKey = new tls.PrivateKey(`${name}-server-key`, { algorithm: 'RSA', rsaBits: 2048 }, { parent: this })
        const request = new tls.CertRequest(
          `${name}-server`,
          {
            privateKeyPem: serverKey.privateKeyPem,
            subject: { commonName: 'fleetmq', organization: 'FleetMQ' },
            dnsNames: [`*.${loadBalancerDnsSuffix(args.region)}`],
            ipAddresses: [...args.publicIps],
          },
          { parent: this },
        )
        const serverCert = new tls.LocallySignedCert(
          `${name}-server`,
          {
            certRequestPem: request.certRequestPem,
            caPrivateKeyPem: caKey.privateKeyPem,
            caCertPem: caCert.certPem,
            validityPeriodHours: SELF_SIGNED_VALIDITY_HOURS,
            allowedUses: ['digital_signature', 'key_encipherment', 'server_auth'],
          },
          { parent: this },
        )
        const imported = new aws.acm.Certificate(
          name,
          {
            certificateBody: serverCert.certPem,
            privateKey: serverKey.privateKeyPem,
            certificateChain: caCert.certPem,
            tags: { Name: name, 'fleetmq:purpose': 'testing' },
          },
          { parent: this },
        )
        this.certificateArn = imported.arn
        this.deviceCaPem = caCert.certPem
        break
      }
    }
    this.registerOutputs({ certificateArn: this.certificateArn, deviceCaPem: this.deviceCaPem })
  }
}
