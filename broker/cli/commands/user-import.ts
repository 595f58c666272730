import { Command, InvalidArgumentError } from 'commander'
import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { FleetmqError } from '../../errors.js'
import { SCRYPT_PARAMS } from '../../auth/password.js'
import { hashCostProblem, hashRecords, parseImport } from '../../auth/user-import.js'
import { printData } from '../output.js'
import { APPLIES_HINT, withStore, withStoreOptions, type StoreOptions } from '../user-store.js'

/*
 * `fleetmq user import FILE`: a fleet's device users in one go (formats and the hash cost in
 * auth/user-import.ts). Users the store has already are never overwritten: the same hash counts as
 * unchanged, another hash as a conflict, listed in the output.
 */

interface ImportOptions extends StoreOptions {
  format?: 'csv' | 'json'
  hashCost: number
}

const parseCost = (value: string): number => {
  const problem = hashCostProblem(Number(value))
  if (problem) throw new InvalidArgumentError(problem)
  return Number(value)
}

export const importCommand = withStoreOptions(new Command('import'))
  .description('add many users from a CSV or JSON file (plain passwords or hashes); existing users are never overwritten')
  .argument('<file>', 'CSV with a header (username,password|hash[,admin]) or JSON ([{"username","password"|"hash","admin"}] or a users.json)')
  .option('--format <format>', 'csv or json (default: from the file name)')
  .option('--hash-cost <N>', `scrypt N for plain passwords (default ${SCRYPT_PARAMS.N}); lower only for random device credentials of 20+ characters`, parseCost, SCRYPT_PARAMS.N)
  .action(async (file: string, options: ImportOptions) => {
    const format = options.format ?? (extname(file).toLowerCase() === '.csv' ? 'csv' : extname(file).toLowerCase() === '.json' ? 'json' : undefined)
    if (format !== 'csv' && format !== 'json') {
      throw new FleetmqError('FLAG_INVALID', `cannot tell the format of ${file}; name it .csv or .json, or give --format csv|json`)
    }
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new FleetmqError('FLAG_INVALID', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check the path`)
    }
    const records = parseImport(text, format, options.hashCost)
    await withStore(options, async (store) => {
      const started = Date.now()
      const users = await hashRecords(records, options.hashCost)
      const hashed = records.filter((r) => r.password !== undefined).length
      const hashSeconds = (Date.now() - started) / 1000
      const report = await store.import(users)
      const seconds = (Date.now() - started) / 1000
      printData(options, { file: store.where, read: records.length, hashed, ...report, seconds }, () => [
        `imported ${file} into ${store.where}: ${report.added} added, ${report.unchanged} already there, ${report.conflicts.length} conflicts, in ${seconds.toFixed(1)} s` +
          (hashed ? ` (${hashed} passwords hashed in ${hashSeconds.toFixed(1)} s)` : '') + `; ${APPLIES_HINT}`,
        ...(report.conflicts.length
          ? [`these users exist with another password and were left as they are (change one with fleetmq user passwd NAME):`, ...report.conflicts.slice(0, 50).map((n) => `  ${n}`), ...(report.conflicts.length > 50 ? [`  … and ${report.conflicts.length - 50} more (--json lists them all)`] : [])]
          : []),
      ].join('\n'))
    })
  })
