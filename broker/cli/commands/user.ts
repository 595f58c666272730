import { Command } from 'commander'
import { readFileSync } from 'node:fs'
import { FleetmqError } from '../../errors.js'
import { hashPassword, parseHash } from '../../auth/password.js'
import { APPLIES_HINT, withStore, withStoreOptions, type StoreOptions } from '../user-store.js'
import { usernameProblem, type Role, type StoredUser } from '../../auth/users.js'
import { importCommand } from './user-import.js'
import { printData } from '../output.js'

/*
 * `fleetmq user add|remove|list|passwd|import`: edits the user store; running nodes apply a change
 * by themselves within seconds (a clustered node's store is the cluster's, in its Redis, and every
 * node hears of the change; a standalone node watches its users.json), and the clients of a removed
 * user, or of one whose password changed, are disconnected.
 * A password is never an argument (it would end up in shell history and `ps`): it comes from a
 * prompt without echo on a terminal, from `--password-file`, or from standard input. Or the
 * user is given an existing hash (`--password-hash`, as another `fleetmq user add` stored it): how
 * images and automation set a password without ever holding it in clear.
 */

interface PasswordOptions extends StoreOptions {
  passwordFile?: string
  passwordStdin?: boolean
  passwordHash?: string
}

export const MIN_PASSWORD_LENGTH = 8

/** Why `password` cannot be used, or undefined. */
export function passwordProblem(password: string): string | undefined {
  if ([...password].length < MIN_PASSWORD_LENGTH) return `the password is shorter than ${MIN_PASSWORD_LENGTH} characters`
  if (/[\r\n]/.test(password)) return 'the password holds a line break; put it alone on one line'
  if (Buffer.byteLength(password) > 1024) return 'the password is longer than 1024 bytes'
  return undefined
}

/** The first line of `text`, without its line break. */
const firstLine = (text: string): string => text.replace(/\r?\n[\s\S]*$/, '')

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** Reads a line from the terminal with echo off. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin
  return new Promise((resolve, reject) => {
    let value: string[] = []
    const finish = (): void => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
    }
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') {
          finish()
          resolve(value.join(''))
          return
        }
        if (ch === '\u0003' || ch === '\u0004') {
          finish()
          reject(new FleetmqError('FLAG_INVALID', 'cancelled; no change was made'))
          return
        }
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1)
        else value.push(ch)
      }
    }
    // Echo off before the prompt shows, so that nothing typed ahead is echoed.
    stdin.setEncoding('utf8')
    stdin.setRawMode(true)
    process.stderr.write(question)
    stdin.resume()
    stdin.on('data', onData)
  })
}

async function readNewPassword(options: PasswordOptions, username: string): Promise<string> {
  if (options.passwordFile && options.passwordStdin) {
    throw new FleetmqError('FLAG_INVALID', '--password-file and --password-stdin exclude each other; give one')
  }
  let password: string
  if (options.passwordFile) {
    try {
      password = firstLine(readFileSync(options.passwordFile, 'utf8'))
    } catch (err) {
      throw new FleetmqError('FLAG_INVALID', `cannot read --password-file ${options.passwordFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check the path`)
    }
  } else if (options.passwordStdin || !process.stdin.isTTY) {
    password = firstLine(await readStdin())
  } else {
    password = await promptHidden(`Password for ${username}: `)
    const problem = passwordProblem(password)
    if (problem) throw new FleetmqError('FLAG_INVALID', `${problem}; no change was made`)
    if ((await promptHidden('Repeat the password: ')) !== password) {
      throw new FleetmqError('FLAG_INVALID', 'the passwords differ; no change was made')
    }
  }
  const problem = passwordProblem(password)
  if (problem) throw new FleetmqError('FLAG_INVALID', `${problem}; no change was made`)
  return password
}

/**
 * The hash to store: `--password-hash` checked (the broker refuses to start on a store with a
 * malformed one, so it is refused here, before it is written), else a new hash of the password.
 */
async function newHash(options: PasswordOptions, username: string): Promise<string> {
  if (options.passwordHash === undefined) return hashPassword(await readNewPassword(options, username))
  if (options.passwordFile || options.passwordStdin) {
    throw new FleetmqError('FLAG_INVALID', '--password-hash excludes --password-file and --password-stdin; give one')
  }
  const parsed = parseHash(options.passwordHash)
  if (typeof parsed === 'string') {
    throw new FleetmqError('FLAG_INVALID', `--password-hash is not a FleetMQ password hash: ${parsed}; copy the whole "hash" value of a user in another users.json (made by fleetmq user add); no change was made`)
  }
  return options.passwordHash
}

function checkUsername(name: string): void {
  const problem = usernameProblem(name)
  if (problem) throw new FleetmqError('FLAG_INVALID', problem)
}

const unknownUser = (name: string, where: string): FleetmqError =>
  new FleetmqError('USER_UNKNOWN', `no user "${name}" in ${where}; fleetmq user list shows the users`)

function withPasswordOptions(command: Command): Command {
  return command
    .option('--password-file <file>', 'read the password from the first line of this file')
    .option('--password-stdin', 'read the password from the first line of standard input')
    .option('--password-hash <hash>', 'store this hash (scrypt$N$r$p$salt$hash, as in another users.json) instead of reading a password')
}

const addCommand = withPasswordOptions(withStoreOptions(new Command('add')))
  .description('add a user; the password is prompted for on a terminal, else read from standard input')
  .argument('<name>', 'username')
  .option('--admin', 'may use the management API and subscribe to $SYS/#')
  .action(async (name: string, options: PasswordOptions & { admin?: boolean }) => withStore(options, async (store) => {
    checkUsername(name)
    // Fail before asking for a password when the store is unreachable or the user exists.
    if (await store.get(name)) {
      throw new FleetmqError('USER_EXISTS', `user "${name}" already exists in ${store.where}; change the password with fleetmq user passwd ${name}`)
    }
    const hash = await newHash(options, name)
    const roles: Role[] = options.admin ? ['admin'] : []
    const user: StoredUser = { username: name, hash, roles, created: new Date().toISOString() }
    await store.add(user)
    printData(options, { file: store.where, username: name, roles, created: user.created },
      () => `added ${options.admin ? 'admin ' : ''}user ${name} to ${store.where}; ${APPLIES_HINT}`)
  }))

const removeCommand = withStoreOptions(new Command('remove'))
  .description('remove a user; its connected clients are disconnected on every node')
  .argument('<name>', 'username')
  .action(async (name: string, options: StoreOptions) => withStore(options, async (store) => {
    await store.remove(name)
    printData(options, { file: store.where, removed: name }, () => `removed user ${name} from ${store.where}; ${APPLIES_HINT} and disconnect its clients`)
  }))

const listCommand = withStoreOptions(new Command('list'))
  .description('list the users and their roles (never the password hashes)')
  .action(async (options: StoreOptions) => withStore(options, async (store) => {
    const users = (await store.list()).map(({ username, roles, created }) => ({ username, roles, created }))
    printData(options, { file: store.where, users }, () => {
      if (users.length === 0) return `no users in ${store.where}; add one with fleetmq user add NAME`
      const width = Math.max(8, ...users.map((u) => u.username.length))
      const rows = users.map((u) => `${u.username.padEnd(width)}  ${(u.roles.join(',') || '-').padEnd(5)}  ${u.created}`)
      return [`${'USERNAME'.padEnd(width)}  ROLES  CREATED`, ...rows].join('\n')
    })
  }))

const passwdCommand = withPasswordOptions(withStoreOptions(new Command('passwd')))
  .description("change a user's password; its connected clients are disconnected and must log in again")
  .argument('<name>', 'username')
  .action(async (name: string, options: PasswordOptions) => withStore(options, async (store) => {
    if (!(await store.get(name))) throw unknownUser(name, store.where)
    const hash = await newHash(options, name)
    await store.update(name, { hash })
    printData(options, { file: store.where, username: name, changed: 'password' }, () => `changed the password of ${name} in ${store.where}; ${APPLIES_HINT}`)
  }))

export const userCommand = new Command('user')
  .description('manage the users: a clustered node\'s are the cluster\'s (in its Redis), a standalone node\'s are in users.json')
  .addCommand(addCommand)
  .addCommand(removeCommand)
  .addCommand(listCommand)
  .addCommand(passwdCommand)
  .addCommand(importCommand)
