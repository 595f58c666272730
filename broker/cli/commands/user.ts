import { Command } from 'commander'
import { readFileSync } from 'node:fs'
import type { ConfigTree } from '../../config/env.js'
import { loadConfig } from '../../config/load.js'
import { FleetmqError } from '../../errors.js'
import { hashPassword, parseHash } from '../../auth/password.js'
import { readUsersFile, updateUsersFile, usernameProblem, usersFilePath, type Role, type StoredUser } from '../../auth/users.js'
import { printData } from '../output.js'

/*
 * `fleetmq user add|remove|list|passwd`: edits the user store a node reads at start and on SIGHUP.
 * A password is never an argument (it would end up in shell history and `ps`): it comes from a
 * prompt without echo on a terminal, from `--password-file`, or from standard input. Or the
 * user is given an existing hash (`--password-hash`, as another `fleetmq user add` stored it): how
 * images and automation set a password without ever holding it in clear.
 */

interface StoreOptions {
  config?: string
  dataDir?: string
  usersFile?: string
  json?: boolean
}

interface PasswordOptions extends StoreOptions {
  passwordFile?: string
  passwordStdin?: boolean
  passwordHash?: string
}

export const MIN_PASSWORD_LENGTH = 8

/** The store a command edits: --users-file, else the config's (file, FLEETMQ_* and --data-dir) as `start` resolves it. */
export function resolveUsersFile(options: StoreOptions, env: NodeJS.ProcessEnv = process.env): string {
  if (options.usersFile) return options.usersFile
  const flags: ConfigTree = {}
  if (options.dataDir) flags.dataDir = options.dataDir
  const config = loadConfig({ file: options.config ?? env.FLEETMQ_CONFIG, env, flags })
  return usersFilePath(config)
}

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

const unknownUser = (name: string, file: string): FleetmqError =>
  new FleetmqError('USER_UNKNOWN', `no user "${name}" in ${file}; fleetmq user list shows the users`)

const RELOAD_HINT = 'running nodes apply it on SIGHUP (systemctl reload fleetmq)'

function withStoreOptions(command: Command): Command {
  return command
    .option('-c, --config <file>', 'YAML or JSON config file whose dataDir/usersFile locate the store (FLEETMQ_CONFIG)')
    .option('--data-dir <dir>', 'data folder holding users.json (default /var/lib/fleetmq)')
    .option('--users-file <file>', 'the user store itself (overrides --config and --data-dir)')
    .option('--json', 'print the result as JSON')
}

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
  .action(async (name: string, options: PasswordOptions & { admin?: boolean }) => {
    checkUsername(name)
    const file = resolveUsersFile(options)
    // Fail before asking for a password when the store is unreadable or the user exists.
    if (readUsersFile(file).users.some((u) => u.username === name)) {
      throw new FleetmqError('USER_EXISTS', `user "${name}" already exists in ${file}; change the password with fleetmq user passwd ${name}`)
    }
    const hash = await newHash(options, name)
    const roles: Role[] = options.admin ? ['admin'] : []
    const user: StoredUser = { username: name, hash, roles, created: new Date().toISOString() }
    await updateUsersFile(file, (users) => {
      if (users.some((u) => u.username === name)) {
        throw new FleetmqError('USER_EXISTS', `user "${name}" already exists in ${file}; change the password with fleetmq user passwd ${name}`)
      }
      return [...users, user]
    })
    printData(options, { file, username: name, roles, created: user.created },
      () => `added ${options.admin ? 'admin ' : ''}user ${name} to ${file}; ${RELOAD_HINT}`)
  })

const removeCommand = withStoreOptions(new Command('remove'))
  .description('remove a user (connected clients of the user stay connected until they reconnect)')
  .argument('<name>', 'username')
  .action(async (name: string, options: StoreOptions) => {
    const file = resolveUsersFile(options)
    await updateUsersFile(file, (users) => {
      if (!users.some((u) => u.username === name)) throw unknownUser(name, file)
      return users.filter((u) => u.username !== name)
    })
    printData(options, { file, removed: name }, () => `removed user ${name} from ${file}; ${RELOAD_HINT}`)
  })

const listCommand = withStoreOptions(new Command('list'))
  .description('list the users and their roles (never the password hashes)')
  .action((options: StoreOptions) => {
    const file = resolveUsersFile(options)
    const users = readUsersFile(file).users.map(({ username, roles, created }) => ({ username, roles, created }))
    printData(options, { file, users }, () => {
      if (users.length === 0) return `no users in ${file}; add one with fleetmq user add NAME`
      const width = Math.max(8, ...users.map((u) => u.username.length))
      const rows = users.map((u) => `${u.username.padEnd(width)}  ${(u.roles.join(',') || '-').padEnd(5)}  ${u.created}`)
      return [`${'USERNAME'.padEnd(width)}  ROLES  CREATED`, ...rows].join('\n')
    })
  })

const passwdCommand = withPasswordOptions(withStoreOptions(new Command('passwd')))
  .description("change a user's password")
  .argument('<name>', 'username')
  .action(async (name: string, options: PasswordOptions) => {
    const file = resolveUsersFile(options)
    if (!readUsersFile(file).users.some((u) => u.username === name)) throw unknownUser(name, file)
    const hash = await newHash(options, name)
    await updateUsersFile(file, (users) => {
      if (!users.some((u) => u.username === name)) throw unknownUser(name, file)
      return users.map((u) => (u.username === name ? { ...u, hash } : u))
    })
    printData(options, { file, username: name, changed: 'password' }, () => `changed the password of ${name} in ${file}; ${RELOAD_HINT}`)
  })

export const userCommand = new Command('user')
  .description('manage the user store (users.json): add, remove, list, passwd')
  .addCommand(addCommand)
  .addCommand(removeCommand)
  .addCommand(listCommand)
  .addCommand(passwdCommand)
