import type { Feature } from '../hooks.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../log.js'

/**
 * Who may connect. Anonymous clients only when the config says `allowAnonymous: true`, and that is
 * announced with a warning at every start.
 */
export function authFeature(config: Config, log: Logger): Feature {
  if (config.allowAnonymous) {
    log.warn('allowAnonymous is on: clients without credentials can connect. Use this for development only.')
  }
  return {
    name: 'auth',
    authenticate(_client, username) {
      if (username === undefined && config.allowAnonymous) return true
      return false
    },
  }
}
