import { execFileSync } from 'node:child_process'
import { createECDH, createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, randomBytes, X509Certificate, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FleetmqError } from '../errors.js'

/*
 * The cluster CA: the trust anchor of the cluster's TLS between nodes (Redis, its replication and
 * Sentinel; node-to-node management). Its private key is derived from the cluster secret (HKDF),
 * so every holder of the secret has the same CA without a CA key or certificate being handed
 * around: Pulumi, `scripts/join-node` and image first boot already give every node the secret,
 * and a joining node can verify its seed before it got anything from it. Each node makes its own
 * key (it never leaves the node) and signs its own certificate with the derived CA key, which is
 * held in memory and in a 0600 temp file only while `openssl` signs.
 *
 * Holding the secret already means being a member (it fetches the Redis password), so the CA adds
 * no new secret: whoever could mint a certificate could join anyway. Changing the secret changes
 * the CA; every node then issues its certificate again (provisioning does, on `configure`).
 *
 * The CA certificate each node writes differs in its signature and dates, never in its subject and
 * key, and that is all a verifier matches a certificate's issuer with.
 */

const P256_ORDER = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551')
const CA_SUBJECT = '/O=FleetMQ/CN=FleetMQ cluster CA'
/** Days a node certificate is valid; `certificate` issues a new one within RENEW_DAYS of the end. */
const NODE_CERT_DAYS = 825
const RENEW_DAYS = 30

/** The CA's private key, the same on every node holding `secret`. */
export function clusterCaKey(secret: string): KeyObject {
  for (let counter = 0; ; counter++) {
    const d = Buffer.from(hkdfSync('sha256', secret, 'fleetmq cluster ca', `P-256 private key ${counter}`, 32))
    const value = BigInt(`0x${d.toString('hex')}`)
    // A scalar outside [1, n-1] is not a key (probability about 2^-32): take the next one.
    if (value === 0n || value >= P256_ORDER) continue
    const ecdh = createECDH('prime256v1')
    ecdh.setPrivateKey(d)
    const point = ecdh.getPublicKey()
    return createPrivateKey({
      format: 'jwk',
      key: { kty: 'EC', crv: 'P-256', d: d.toString('base64url'), x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33, 65).toString('base64url') },
    })
  }
}

function openssl(args: readonly string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new FleetmqError('CLUSTER', 'openssl is not installed; install it (apt-get install openssl) to issue the node certificate')
    throw new FleetmqError('CLUSTER', `openssl ${args[0]} failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`)
  }
}

function writePrivate(file: string, text: string | Buffer, mode = 0o600): void {
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode })
  renameSync(tmp, file)
}

export interface NodeCertificateRequest {
  readonly secret: string
  /** Folder of `ca.pem`, `node.pem` and `node-key.pem`. */
  readonly dir: string
  /** The certificate's CN (the node's name). */
  readonly name: string
  /** IP addresses and DNS names peers reach the node by (subjectAltName). */
  readonly names: readonly string[]
}

export interface NodeCertificateFiles {
  readonly ca: string
  readonly cert: string
  readonly key: string
  /** Whether `cert` (or `ca`) was written by this call. */
  readonly changed: boolean
}

const subjectAltName = (names: readonly string[]): string =>
  [...new Set(names)].map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',')

/** Whether `cert` is still the one to use: signed by `caKey`, for these names, not near its end. */
function certificateFits(certPem: string, keyPem: string, caKey: KeyObject, names: readonly string[]): boolean {
  try {
    const cert = new X509Certificate(certPem)
    if (!cert.verify(createPublicKey(caKey)) || !cert.checkPrivateKey(createPrivateKey(keyPem))) return false
    if (new Date(cert.validTo).getTime() - Date.now() < RENEW_DAYS * 86_400_000) return false
    const have = new Set((cert.subjectAltName ?? '').split(', ').map((entry) => entry.replace(/^IP Address:/, 'IP:')))
    return names.every((n) => have.has(isIP(n) ? `IP:${n}` : `DNS:${n}`))
  } catch {
    return false
  }
}

/** Whether `file` is a CA certificate of `caKey`. */
function caCertificateFits(file: string, caKey: KeyObject): boolean {
  try {
    const spki = (key: KeyObject): string | Buffer => key.export({ format: 'pem', type: 'spki' })
    return spki(new X509Certificate(readFileSync(file)).publicKey) === spki(createPublicKey(caKey))
  } catch {
    return false
  }
}

/** Writes the CA certificate of `caKey` to `file` (mode 0644). */
function writeCaCertificate(caKey: KeyObject, file: string, work: string): void {
  const caKeyFile = join(work, 'ca-key.pem')
  writePrivate(caKeyFile, caKey.export({ format: 'pem', type: 'pkcs8' }))
  openssl(['req', '-x509', '-new', '-key', caKeyFile, '-sha256', '-days', '36500', '-subj', CA_SUBJECT,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', join(work, 'ca.pem')])
  writePrivate(file, readFileSync(join(work, 'ca.pem')), 0o644)
}

/** A folder for openssl's files, the CA key among them (0600), removed after `use`. */
function withWorkDir<T>(use: (work: string) => T): T {
  const work = mkdtempSync(join(tmpdir(), 'fleetmq-ca-'))
  try {
    return use(work)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

/**
 * Makes sure `file` is the cluster CA certificate of `secret` (what a node that has no certificate
 * yet verifies its seed with); returns whether it wrote it.
 */
export function ensureClusterCaCertificate(secret: string, file: string): boolean {
  const caKey = clusterCaKey(secret)
  if (caCertificateFits(file, caKey)) return false
  withWorkDir((work) => writeCaCertificate(caKey, file, work))
  return true
}

/**
 * Makes sure `dir` holds the cluster CA certificate and this node's key and certificate signed by
 * it for `names` (serverAuth and clientAuth: Redis uses it both ways). Keeps the key and a
 * certificate that still fits; idempotent.
 */
export function ensureNodeCertificate(request: NodeCertificateRequest): NodeCertificateFiles {
  if (request.names.length === 0) throw new FleetmqError('CLUSTER', 'a node certificate needs at least one address or name (--address)')
  const caKey = clusterCaKey(request.secret)
  mkdirSync(request.dir, { recursive: true, mode: 0o750 })
  const files = { ca: join(request.dir, 'ca.pem'), cert: join(request.dir, 'node.pem'), key: join(request.dir, 'node-key.pem') }
  if (!existsSync(files.key)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    writePrivate(files.key, privateKey.export({ format: 'pem', type: 'pkcs8' }))
  }
  const keyPem = readFileSync(files.key, 'utf8')
  const caFits = caCertificateFits(files.ca, caKey)
  const certFits = caFits && existsSync(files.cert) && certificateFits(readFileSync(files.cert, 'utf8'), keyPem, caKey, request.names)
  if (caFits && certFits) return { ...files, changed: false }
  // The CA key exists on disk only in this 0700 folder, while openssl runs.
  withWorkDir((work) => {
    if (!caFits) writeCaCertificate(caKey, files.ca, work)
    const caKeyFile = join(work, 'ca-key.pem')
    if (!existsSync(caKeyFile)) writePrivate(caKeyFile, caKey.export({ format: 'pem', type: 'pkcs8' }))
    const extensions = join(work, 'node.ext')
    writeFileSync(extensions, [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth,clientAuth',
      `subjectAltName=${subjectAltName(request.names)}`,
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'))
    openssl(['req', '-new', '-key', files.key, '-subj', `/O=FleetMQ/CN=${request.name.replace(/[/\\,=+]/g, '_')}`, '-out', join(work, 'node.csr')])
    openssl(['x509', '-req', '-in', join(work, 'node.csr'), '-CA', files.ca, '-CAkey', caKeyFile, '-set_serial', `0x${randomBytes(16).toString('hex')}`,
      '-days', String(NODE_CERT_DAYS), '-sha256', '-extfile', extensions, '-out', join(work, 'node.pem')])
    writePrivate(files.cert, readFileSync(join(work, 'node.pem')), 0o644)
  })
  return { ...files, changed: true }
}
