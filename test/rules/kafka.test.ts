import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { startKafka, waitForRecords, type KafkaBroker } from '../helpers/kafka.js'

/*
 * Rules into a real Apache Kafka (KRaft, one JVM): one broker start for the whole file, the JVM
 * being the heaviest process the suite runs.
 */

describe('Kafka for the rules tests', () => {
  let kafka: KafkaBroker
  before(async () => {
    kafka = await startKafka()
    console.log(`Kafka answered ${kafka.startMs()} ms after its JVM was spawned`)
  })
  after(async () => {
    await kafka?.stop()
  })

  it('a single-node KRaft broker takes records and kcat reads them back, also after a restart on the same folder', async () => {
    const produce = (line: string) => new Promise<void>((resolve, reject) => {
      const child = execFile('kcat', ['-P', '-b', kafka.bootstrap, '-t', 'helper-check', '-K', ':'], (err) => (err ? reject(err) : resolve()))
      child.stdin?.end(`${line}\n`)
    })
    await produce('k1:one')
    assert.deepEqual((await waitForRecords(kafka.bootstrap, 'helper-check', 1)).map((r) => [r.key, r.payload]), [['k1', 'one']])
    await kafka.stop()
    await kafka.start()
    console.log(`Kafka answered ${kafka.startMs()} ms after a restart`)
    await produce('k2:two')
    assert.deepEqual((await waitForRecords(kafka.bootstrap, 'helper-check', 2)).map((r) => [r.key, r.payload]), [['k1', 'one'], ['k2', 'two']])
  })
})
