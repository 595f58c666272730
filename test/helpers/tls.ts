import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/*
 * Real certificates from the `openssl` CLI, for tests: a CA, a server certificate it signs, and
 * client certificates on demand. ECDSA P-256 keys, because RSA key generation is slow on a busy
 * 2-core machine.
 */

export interface Certificates {
  readonly dir: string
  /** CA certificate (PEM): `--cafile` for mosquitto clients, `ca` for MQTT.js, `tls.ca` for client certs. */
  readonly ca: string
  readonly caKey: string
  /** Server certificate (PEM) and its key. */
  readonly cert: string
  readonly key: string
  /** Certificate followed by key in one file, as HAProxy's `crt` wants it. */
  readonly pem: string
  /** SHA-256 fingerprint of the server certificate, as `getPeerCertificate().fingerprint256` prints it. */
  readonly fingerprint256: string
}

export interface CertificateOptions {
  /** Subject CN of the server certificate. Default `localhost`. */
  readonly cn?: string
  /** subjectAltName entries. Default `['DNS:localhost', 'IP:127.0.0.1']`. */
  readonly san?: readonly string[]
  /** File name prefix, to keep several sets (an old and a new certificate) in one folder. Default `server`. */
  readonly name?: string
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

function newKey(path: string): void {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path])
}

function ensureCa(dir: string): { ca: string; caKey: string } {
  const ca = join(dir, 'ca.pem')
  const caKey = join(dir, 'ca-key.pem')
  try {
    readFileSync(ca)
  } catch {
    newKey(caKey)
    openssl(['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2', '-subj', '/CN=FleetMQ test CA', '-out', ca])
  }
  return { ca, caKey }
}

/** Signs a certificate for `cn` with the CA in `dir`; returns the certificate and key paths. */
function issue(dir: string, name: string, cn: string, extensions: string): { cert: string; key: string } {
  const { ca, caKey } = ensureCa(dir)
  const key = join(dir, `${name}-key.pem`)
  const csr = join(dir, `${name}.csr`)
  const cert = join(dir, `${name}.pem`)
  const ext = join(dir, `${name}.ext`)
  newKey(key)
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', csr])
  writeFileSync(ext, extensions)
  openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-days', '2', '-sha256', '-extfile', ext, '-out', cert])
  return { cert, key }
}

/** A CA (created once per folder) and a server certificate signed by it. */
export function makeCertificates(dir: string, options: CertificateOptions = {}): Certificates {
  mkdirSync(dir, { recursive: true })
  const name = options.name ?? 'server'
  const san = options.san ?? ['DNS:localhost', 'IP:127.0.0.1']
  const { ca, caKey } = ensureCa(dir)
  const { cert, key } = issue(dir, name, options.cn ?? 'localhost',
    `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san.join(',')}\n`)
  const pem = join(dir, `${name}-combined.pem`)
  writeFileSync(pem, Buffer.concat([readFileSync(cert), readFileSync(key)]))
  return { dir, ca, caKey, cert, key, pem, fingerprint256: new X509Certificate(readFileSync(cert)).fingerprint256 }
}

/** A client certificate with subject CN `cn`, signed by the CA of `certs`. */
export function makeClientCertificate(certs: Pick<Certificates, 'dir'>, cn: string): { cert: string; key: string } {
  return issue(certs.dir, `client-${cn.replace(/[^A-Za-z0-9_.-]/g, '_')}`, cn,
    'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n')
}
