import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/*
 * What the stack generates on its first run and keeps in the state folder: a CA and a server
 * certificate for the load balancer, the admin password, the cluster secret, the Redis password.
 * Secret files are 0600 and generated once; `--fresh` removes the folder to start over.
 */

export interface StackSecrets {
  readonly caFile: string
  /** Certificate chain and key in one PEM, as HAProxy wants it. */
  readonly haproxyPem: string
  readonly adminUser: string
  readonly adminPassword: string
  readonly adminPasswordFile: string
  readonly clusterSecretFile: string
  readonly redisPassword: string
  readonly redisPasswordFile: string
  /** True when this run generated them (the password is printed only then). */
  readonly created: boolean
}

const password = (): string => randomBytes(18).toString('base64url')

function writeSecret(file: string, value: string): void {
  writeFileSync(file, `${value}\n`, { mode: 0o600 })
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

export function ensureSecrets(stateDir: string): StackSecrets {
  const dir = join(stateDir, 'secrets')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const files = {
    caKey: join(dir, 'ca.key'),
    caFile: join(stateDir, 'ca.pem'),
    serverKey: join(dir, 'server.key'),
    serverCert: join(dir, 'server.crt'),
    haproxyPem: join(dir, 'haproxy.pem'),
    adminPasswordFile: join(dir, 'admin-password'),
    clusterSecretFile: join(dir, 'cluster-secret'),
    redisPasswordFile: join(dir, 'redis-password'),
  }
  const created = !existsSync(files.adminPasswordFile)
  if (!existsSync(files.haproxyPem)) {
    const ext = join(dir, 'server.ext')
    writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n')
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '825', '-subj', '/CN=FleetMQ local stack CA',
      '-keyout', files.caKey, '-out', files.caFile], dir)
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', files.serverKey, '-out', join(dir, 'server.csr')], dir)
    openssl(['x509', '-req', '-in', join(dir, 'server.csr'), '-CA', files.caFile, '-CAkey', files.caKey, '-CAcreateserial',
      '-days', '825', '-extfile', ext, '-out', files.serverCert], dir)
    writeFileSync(files.haproxyPem, readFileSync(files.serverCert, 'utf8') + readFileSync(files.serverKey, 'utf8'), { mode: 0o600 })
  }
  if (created) writeSecret(files.adminPasswordFile, password())
  if (!existsSync(files.clusterSecretFile)) writeSecret(files.clusterSecretFile, randomBytes(32).toString('hex'))
  if (!existsSync(files.redisPasswordFile)) writeSecret(files.redisPasswordFile, password())
  return {
    caFile: files.caFile,
    haproxyPem: files.haproxyPem,
    adminUser: 'admin',
    adminPassword: readFileSync(files.adminPasswordFile, 'utf8').trim(),
    adminPasswordFile: files.adminPasswordFile,
    clusterSecretFile: files.clusterSecretFile,
    redisPassword: readFileSync(files.redisPasswordFile, 'utf8').trim(),
    redisPasswordFile: files.redisPasswordFile,
    created,
  }
}
