import * as aws from '@pulumi/aws'
import * as pulumi from '@pulumi/pulumi'

/** Days a flow log or access log is kept before S3 deletes it. */
export const LOG_RETENTION_DAYS = 90

export interface LogBucketArgs {
  /** The account the logs belong to: only its own log deliveries may write. */
  accountId: pulumi.Input<string>
}

/**
 * A private S3 bucket for the VPC flow logs and the NLB access logs: public access blocked,
 * SSE-S3 (the NLB delivers only to SSE-S3 buckets), ACLs off, objects expire after
 * LOG_RETENTION_DAYS. Only AWS' log delivery service, on behalf of this account, may write, and
 * only under AWSLogs/<account>/.
 */
export class LogBucket extends pulumi.ComponentResource {
  readonly bucket: pulumi.Output<string>
  readonly arn: pulumi.Output<string>

  constructor(name: string, args: LogBucketArgs, opts: pulumi.ComponentResourceOptions = {}) {
    super('fleetmq:aws:LogBucket', name, {}, opts)
    const parent = { parent: this }
    const bucket = new aws.s3.Bucket(name, { tags: { Name: name } }, parent)
    new aws.s3.BucketPublicAccessBlock(name, {
      bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true,
    }, parent)
    new aws.s3.BucketOwnershipControls(name, { bucket: bucket.id, rule: { objectOwnership: 'BucketOwnerEnforced' } }, parent)
    new aws.s3.BucketServerSideEncryptionConfiguration(name, {
      bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: 'AES256' } }],
    }, parent)
    new aws.s3.BucketLifecycleConfiguration(name, {
      bucket: bucket.id,
      rules: [{ id: 'expire-logs', status: 'Enabled', filter: {}, expiration: { days: LOG_RETENTION_DAYS } }],
    }, parent)
    const service = { Service: 'delivery.logs.amazonaws.com' }
    new aws.s3.BucketPolicy(name, {
      bucket: bucket.id,
      policy: pulumi.all([bucket.arn, args.accountId]).apply(([arn, account]) => JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Sid: 'LogDeliveryWrite', Effect: 'Allow', Principal: service, Action: 's3:PutObject', Resource: `${arn}/AWSLogs/${account}/*`, Condition: { StringEquals: { 'aws:SourceAccount': account } } },
          { Sid: 'LogDeliveryCheck', Effect: 'Allow', Principal: service, Action: ['s3:GetBucketAcl', 's3:ListBucket'], Resource: arn, Condition: { StringEquals: { 'aws:SourceAccount': account } } },
          { Sid: 'TlsOnly', Effect: 'Deny', Principal: '*', Action: 's3:*', Resource: [arn, `${arn}/*`], Condition: { Bool: { 'aws:SecureTransport': 'false' } } },
        ],
      })),
    }, parent)
    this.bucket = bucket.bucket
    this.arn = bucket.arn
    this.registerOutputs({ bucket: this.bucket, arn: this.arn })
  }
}
