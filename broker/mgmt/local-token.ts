import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { bearerToken, secretsEqual } from '../cluster/secret.js'
import { FleetmqError } from '../errors.js'

/*
 * The local management token: how `fleetmq cluster …` (and any tool run on the node's host) proves
 * it may manage the node. A node writes a fresh random token to `<dataDir>/mgmt.token` (0600, the
 * node's own user) at every start; the CLI reads it and sends it as `Authorization: Bearer`.
 *
 * It replaces trusting requests from loopback: any local user, and any web page reaching the port
 * through an SSH tunnel or DNS rebinding, came from loopback. Reading the token takes the same
 * file permissions as reading the node's secrets, which is what "may manage the node" means.
 */

export const LOCAL_TOKEN_FILE = 'mgmt.token'

export function localTokenPath(dataDir: string): string {
  return join(dataDir, LOCAL_TOKEN_FILE)
}

export interface LocalToken {
  readonly file: string
  /** The request carries this start's token as a Bearer token. */
  matches(req: IncomingMessage): boolean
}

/** A new token for this start, written atomically with mode 0600 before the API listens. */
export function createLocalToken(dataDir: string): LocalToken {
  const token = randomBytes(32).toString('hex')
  const file = localTokenPath(dataDir)
  const temporary = `${file}.${process.pid}.tmp`
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    writeFileSync(temporary, `${token}\n`, { mode: 0o600 })
    chmodSync(temporary, 0o600) // an umask cannot widen it, but an existing file keeps its mode
    renameSync(temporary, file)
  } catch (err) {
    throw new FleetmqError('MGMT_TOKEN', `cannot write the management token ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); run the node as the user that owns the data folder (--data-dir)`)
  }
  return {
    file,
    matches(req) {
      const given = bearerToken(req)
      return given !== undefined && secretsEqual(given, token)
    },
  }
}

/** The token of the node whose data folder is `dataDir`, or undefined when there is none to read. */
export function readLocalToken(dataDir: string): string | undefined {
  try {
    const token = readFileSync(localTokenPath(dataDir), 'utf8').trim()
    return token.length > 0 ? token : undefined
  } catch {
    return undefined
  }
}

/**
 * `<dataDir>/mgmt-ca.pem`: the CA a `fleetmq` command on this host verifies the node's https API
 * with (`mgmt.tls.ca`, else the node's own certificate), written at every start when the API
 * speaks TLS and removed when it does not, so that the command needs no flag to find it.
 */
export const LOCAL_CA_FILE = 'mgmt-ca.pem'

export function writeLocalCa(dataDir: string, ca: Buffer | undefined): void {
  const file = join(dataDir, LOCAL_CA_FILE)
  if (ca === undefined) {
    rmSync(file, { force: true })
    return
  }
  const temporary = `${file}.${process.pid}.tmp`
  writeFileSync(temporary, ca, { mode: 0o600 })
  renameSync(temporary, file)
}

/** The CA the local node left for commands on this host, or undefined (plain HTTP). */
export function readLocalCa(dataDir: string): Buffer | undefined {
  try {
    return readFileSync(join(dataDir, LOCAL_CA_FILE))
  } catch {
    return undefined
  }
}
