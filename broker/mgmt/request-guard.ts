import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import { hostname } from 'node:os'

/*
 * Checks a management request passes before routing, whoever sends it:
 *
 * - the request target parses (a bad one, such as `//[`, is a 400, never an exception);
 * - the Host header names this node: an IP address, `localhost`, the machine's host name or one of
 *   `mgmt.allowedHosts`. A web page that rebinds its own DNS name to the node's address sends its
 *   own name as Host and is refused (DNS rebinding);
 * - no browser sent it from another site: `Sec-Fetch-Site` is not cross-site or same-site and an
 *   `Origin` header, when present, is the node's own. The API answers no CORS preflight, so a page
 *   elsewhere cannot read an answer; this refuses the "simple" requests (a `text/plain` POST) a page
 *   can still send blind;
 * - a request with a body says it is JSON (which a browser cannot send cross-site without a preflight).
 */

export interface RequestProblem {
  readonly status: number
  readonly error: string
}

/** The path of a request target, or undefined when it does not parse. */
export function requestPath(target: string | undefined): string | undefined {
  try {
    return new URL(target ?? '/', 'http://node').pathname
  } catch {
    return undefined
  }
}

/** The host part of a Host header value, without the port and the IPv6 brackets, lower-cased. */
export function hostOf(header: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(header)
  if (bracketed) return bracketed[1].toLowerCase()
  return header.replace(/:\d*$/, '').toLowerCase()
}

export function hostAllowed(header: string | undefined, allowedHosts: readonly string[], machine: string = hostname()): boolean {
  // HTTP/1.0 clients may omit Host; browsers never do.
  if (header === undefined) return true
  const host = hostOf(header)
  if (isIP(host) !== 0 || host === 'localhost') return true
  const own = machine.toLowerCase()
  if (host === own || host.startsWith(`${own}.`)) return true
  return allowedHosts.some((allowed) => allowed.toLowerCase() === host)
}

export function requestProblem(req: IncomingMessage, allowedHosts: readonly string[]): RequestProblem | undefined {
  if (requestPath(req.url) === undefined) {
    return { status: 400, error: 'the request target is not a valid path' }
  }
  if (!hostAllowed(req.headers.host, allowedHosts)) {
    return { status: 421, error: `this node does not answer to the host name "${hostOf(req.headers.host ?? '')}"; use its IP address, or add the name to mgmt.allowedHosts` }
  }
  const fetchSite = req.headers['sec-fetch-site']
  if (fetchSite === 'cross-site' || fetchSite === 'same-site') {
    return { status: 403, error: 'cross-site requests are refused; call the management API from the node\'s own pages or a non-browser client' }
  }
  const origin = req.headers.origin
  if (origin !== undefined && origin !== `http://${req.headers.host}` && origin !== `https://${req.headers.host}`) {
    return { status: 403, error: `requests from the web origin ${origin} are refused; call the management API from the node's own pages or a non-browser client` }
  }
  const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined
  if (hasBody && !/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
    return { status: 415, error: 'the request body must be JSON: send Content-Type: application/json' }
  }
  return undefined
}
