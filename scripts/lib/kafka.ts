import { randomBytes } from 'node:crypto'
import { join, resolve } from 'node:path'

/*
 * Apache Kafka as the tests and the local stack run it: the jars `npm run setup` resolved with
 * Maven (scripts/setup.sh), one JVM in KRaft mode as controller and broker on loopback. Maven's
 * artifacts carry no shell scripts, so the storage tool and the broker start by their main
 * classes.
 */

/** Keep in step with KAFKA_VERSION in scripts/setup.sh. */
export const KAFKA_VERSION = '4.4.0'
export const KAFKA_LIBS = resolve(import.meta.dirname, '../../.cache/kafka', KAFKA_VERSION)
/** Written by setup.sh once every jar is in place. */
export const KAFKA_COMPLETE_MARKER = join(KAFKA_LIBS, 'complete')

/**
 * Small heap, the serial collector and C1 only: a local broker moves little data, and a start then
 * costs about a third less CPU on 2 shared cores than with the default tiered JIT.
 */
export const KAFKA_JVM_OPTIONS = ['-Xms64m', '-Xmx512m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Djava.awt.headless=true']

/** `java` arguments running one of Kafka's main classes. */
export const kafkaJavaArgs = (mainClass: string, args: readonly string[]): string[] => [...KAFKA_JVM_OPTIONS, '-cp', `${KAFKA_LIBS}/*`, mainClass, ...args]

/**
 * What `kafka-storage.sh format` does: meta.properties and the bootstrap metadata in the log
 * folder, with the SCRAM credentials of the SASL listener's user.
 */
export function kafkaFormatArgs(properties: string, sasl?: KafkaSaslListener): string[] {
  const scram = sasl ? ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => ['--add-scram', `${m}=[name=${sasl.username},password=${sasl.password}]`]) : []
  return kafkaJavaArgs('kafka.tools.StorageTool', ['format', '--cluster-id', randomBytes(16).toString('base64url'), '--config', properties, '--ignore-formatted', ...scram])
}

export const kafkaServerArgs = (properties: string): string[] => kafkaJavaArgs('kafka.Kafka', [properties])

/** A SASL listener beside the plain one: PLAIN and SCRAM-SHA-256/512 for one user. */
export interface KafkaSaslListener {
  readonly port: number
  readonly username: string
  readonly password: string
}

/** `key=value` lines of a single-node KRaft server on loopback, its log folder `dataDir`. */
export function kafkaProperties(dataDir: string, port: number, controllerPort: number, partitions = 1, sasl?: KafkaSaslListener): string {
  const listeners = [`PLAINTEXT://127.0.0.1:${port}`, ...(sasl ? [`SASL_PLAINTEXT://127.0.0.1:${sasl.port}`] : [])]
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=${[...listeners, `CONTROLLER://127.0.0.1:${controllerPort}`].join(',')}`,
    `advertised.listeners=${listeners.join(',')}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    ...(sasl ? [
      'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
      // PLAIN users are the JAAS entries; SCRAM credentials are in the metadata (kafkaFormatArgs' --add-scram).
      `listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${sasl.username}="${sasl.password}";`,
      'listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
      'listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    ] : []),
    `log.dirs=${dataDir}`,
    `num.partitions=${partitions}`,
    'auto.create.topics.enable=true',
    // One broker: internal topics with one replica, one partition, no rebalance delay.
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=1',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    '',
  ].join('\n')
}

/** Why Kafka cannot run here, or undefined. */
export function kafkaMissing(exists: (path: string) => boolean): string | undefined {
  return exists(KAFKA_COMPLETE_MARKER) ? undefined : `Apache Kafka ${KAFKA_VERSION} is not in ${KAFKA_LIBS}: run npm run setup (it resolves the jars with Maven)`
}
