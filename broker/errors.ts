/**
 * The catalogue of errors FleetMQ reports to operators. Each has a stable code (logs, `--json`
 * output and tests key on it) and a message that says what to do about it.
 */
export const ERRORS = {
  CONFIG_INVALID: 'the configuration is invalid',
  CONFIG_UNREADABLE: 'the configuration file cannot be read',
  FLAG_INVALID: 'a command-line option is invalid',
  LISTEN_FAILED: 'a listener could not bind its address',
  TLS_MATERIAL: 'TLS material could not be loaded',
  USER_STORE: 'the user store cannot be used',
  USER_EXISTS: 'the user already exists',
  USER_UNKNOWN: 'no such user',
  ANONYMOUS_DISABLED: 'no user can connect',
  ACL_OPEN: 'the ACL lets any authenticated client use every topic',
  CLUSTER: 'the cluster operation failed',
  MGMT_REQUEST: 'the management API refused the request',
  MGMT_TOKEN: 'the local management token cannot be written',
  RULE_INVALID: 'a rule cannot be compiled',
  DEPENDENCY_VERSION: 'an installed dependency is not the version the broker is written for',
} as const

export type ErrorCode = keyof typeof ERRORS

export class FleetmqError extends Error {
  readonly code: `FLEETMQ_ERR_${ErrorCode}`
  readonly details: readonly string[]

  /**
   * @param code catalogue entry
   * @param message what happened and what to do, in one sentence
   * @param details one line per finding (for example every config error with its path)
   */
  constructor(code: ErrorCode, message: string, details: readonly string[] = []) {
    super(message)
    this.name = 'FleetmqError'
    this.code = `FLEETMQ_ERR_${code}`
    this.details = details
  }
}

export function isFleetmqError(err: unknown): err is FleetmqError {
  return err instanceof FleetmqError
}
