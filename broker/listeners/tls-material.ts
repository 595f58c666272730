import { readFileSync } from 'node:fs'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import tls from 'node:tls'
import { FleetmqError } from '../errors.js'
import type { TlsConfig } from '../config/schema.js'

/*
 * A TLS listener's certificate, key and CA, read from the files the config names. Read at start
 * and again on SIGHUP; each file is checked on its own so that an error names the file at fault.
 */

export type TlsMaterial = Required<Pick<tls.SecureContextOptions, 'cert' | 'key' | 'minVersion'>> & Pick<tls.SecureContextOptions, 'ca'>

function readPem(listener: string, field: string, path: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    throw new FleetmqError('TLS_MATERIAL', `${listener}: cannot read tls.${field} ${path} (${code}); check the path and that the broker's user may read the file`)
  }
}

function check(listener: string, field: string, path: string, parse: () => unknown, expected: string): void {
  try {
    parse()
  } catch (err) {
    throw new FleetmqError('TLS_MATERIAL', `${listener}: tls.${field} ${path} is not ${expected} (${(err as Error).message})`)
  }
}

export function loadTlsMaterial(listener: string, config: TlsConfig): TlsMaterial {
  const cert = readPem(listener, 'cert', config.cert)
  const key = readPem(listener, 'key', config.key)
  const ca = config.ca === undefined ? undefined : readPem(listener, 'ca', config.ca)
  check(listener, 'cert', config.cert, () => new X509Certificate(cert), 'a PEM certificate')
  check(listener, 'key', config.key, () => createPrivateKey(key), 'a PEM private key (an encrypted key is not supported)')
  if (ca !== undefined && config.ca !== undefined) check(listener, 'ca', config.ca, () => new X509Certificate(ca), 'a PEM CA certificate bundle')
  // TLS 1.0 and 1.1 are deprecated (RFC 8996); the schema only offers 1.2 and 1.3.
  const material: TlsMaterial = { cert, key, ca, minVersion: config.minVersion }
  try {
    tls.createSecureContext(material)
  } catch (err) {
    throw new FleetmqError('TLS_MATERIAL',
      `${listener}: tls.cert ${config.cert} and tls.key ${config.key} cannot be used together (${(err as Error).message}); the key must be the private key of the certificate's first entry`)
  }
  return material
}

/** Server options of a TLS listener (mqtts, wss), with the material read from disk. */
export function tlsServerOptions(listener: string, config: TlsConfig, handshakeTimeoutMs: number): tls.TlsOptions {
  return {
    ...loadTlsMaterial(listener, config),
    requestCert: config.requestClientCert || config.requireClientCert,
    // With requestCert only, an unverified certificate is allowed but never trusted: the CN is
    // recorded only for `socket.authorized` connections (see `verifiedCommonName`).
    rejectUnauthorized: config.requireClientCert,
    handshakeTimeout: handshakeTimeoutMs,
  }
}

/** The CN of a client certificate that verified against the listener's CA. */
export function verifiedCommonName(socket: tls.TLSSocket): string | undefined {
  if (!socket.authorized) return undefined
  const cn = (socket.getPeerCertificate().subject as { CN?: string | string[] } | undefined)?.CN
  const first = Array.isArray(cn) ? cn[0] : cn
  return first === undefined || first === '' ? undefined : first
}
