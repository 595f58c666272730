/*
 * The parts of FleetMQ's first boot that need more than shell: reading the `fleetmq:` key of the
 * cloud-init user-data, the names and addresses the TLS certificate covers, the node env file
 * (rendered with the broker's own renderEnvFile and checked against its schema, from the installed
 * bundle) and the cluster descriptor of a seed.
 *
 * Runs on the instance with the bundled Node.js: node firstboot-helper.mjs <command> [args].
 * Plain JavaScript on purpose: the image has no TypeScript loader.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'

const RELEASE = process.env.FLEETMQ_RELEASE_DIR ?? '/opt/fleetmq/current'
const { renderEnvFile } = await import(join(RELEASE, 'build/broker/config/env.js'))
const { validateConfig } = await import(join(RELEASE, 'build/broker/config/load.js'))
const { signRequest, unseal } = await import(join(RELEASE, 'build/broker/cluster/signed-request.js'))
const { ensureClusterCaCertificate } = await import(join(RELEASE, 'build/broker/cluster/cluster-ca.js'))
const { mgmtRequest, describeFailure } = await import(join(RELEASE, 'build/broker/mgmt/client.js'))
const YAML = createRequire(join(RELEASE, 'package.json'))('yaml')

export const MQTT_PORT = 1883
export const MQTTS_PORT = 8883
export const MGMT_PORT = 18083
export const SENTINEL_PORT = 26379
const SENTINEL_MASTER = 'fleetmq'
const ETC = '/etc/fleetmq'

/** The options `fleetmq:` takes in user-data, and what each must look like. */
const OPTIONS = {
  admin_password_hash: (v) => typeof v === 'string' && /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(v)
    || 'must be a hash as `fleetmq user add` stores it (scrypt$N$r$p$salt$hash); see docs/images.md',
  tls_cert: (v) => (typeof v === 'string' && v.includes('-----BEGIN CERTIFICATE-----')) || 'must be a PEM certificate (chain)',
  tls_key: (v) => (typeof v === 'string' && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(v)) || 'must be a PEM private key',
  join: (v) => (typeof v === 'string' && /^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(v)) || 'must be HOST or HOST:PORT of a running instance (its management API, port 18083)',
  cluster_secret: (v) => (typeof v === 'string' && Buffer.byteLength(v) >= 32 && !/\s/.test(v))
    || 'must be one word of at least 32 characters (the cluster secret from the seed\'s /root/fleetmq-credentials)',
  node_name: (v) => (typeof v === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(v)) || 'must be letters, digits, _ . - (at most 64)',
  provisioning: (v) => v === 'external'
    || "must be 'external': another tool (FleetMQ's Pulumi program, scripts/join-node) provisions this instance, and first boot leaves it alone",
  cluster_peers: (v) => (Array.isArray(v) && v.length > 0 && v.every(isNetwork))
    || 'must be a list of the addresses or CIDRs of the cluster\'s instances (e.g. [10.0.1.0/24]): they, and only they, reach management, Redis and Sentinel',
  mqtt_plaintext: (v) => typeof v === 'boolean' || 'must be true or false (plaintext MQTT on 1883, off by default: passwords would cross the network in clear)',
}

/** An IPv4 or IPv6 address, or a CIDR: what the host firewall admits (scripts/provision/lib/firewall.sh). */
function isNetwork(v) {
  return typeof v === 'string' && /^(\d{1,3}(\.\d{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)(\/\d{1,3})?$/.test(v)
}

function fail(message) {
  process.stderr.write(`fleetmq-firstboot: ${message}\n`)
  process.exit(2)
}

function arg(name) {
  const i = process.argv.indexOf(`--${name}`)
  if (i < 0 || i + 1 >= process.argv.length) fail(`missing --${name}`)
  return process.argv[i + 1]
}

const shellQuote = (value) => `'${String(value).replace(/'/g, `'\\''`)}'`

function writePrivate(file, content) {
  writeFileSync(`${file}.tmp`, content, { mode: 0o600 })
  renameSync(`${file}.tmp`, file)
}

/**
 * `userdata --cloud-config FILE --out DIR`: checks the `fleetmq:` section and writes DIR/options.sh
 * (shell assignments) and, when given, DIR/tls/{cert,key}.pem and DIR/cluster-secret.
 */
function userdata() {
  const file = arg('cloud-config')
  const out = arg('out')
  let section = {}
  if (existsSync(file)) {
    let doc
    try {
      doc = YAML.parse(readFileSync(file, 'utf8')) ?? {}
    } catch (err) {
      fail(`the user-data in ${file} is not YAML (${err.message})`)
    }
    section = doc.fleetmq ?? {}
  }
  if (typeof section !== 'object' || Array.isArray(section)) fail('user-data `fleetmq:` must be a mapping of options (see docs/images.md)')
  const problems = []
  for (const [key, value] of Object.entries(section)) {
    const check = OPTIONS[key]
    if (!check) { problems.push(`fleetmq.${key} is not an option; use one of: ${Object.keys(OPTIONS).join(', ')}`); continue }
    const verdict = check(value)
    if (verdict !== true) problems.push(`fleetmq.${key} ${verdict}`)
  }
  if (section.join && !section.cluster_secret) problems.push('fleetmq.join needs fleetmq.cluster_secret: the secret in the seed\'s /root/fleetmq-credentials')
  if (!section.tls_cert !== !section.tls_key) problems.push('fleetmq.tls_cert and fleetmq.tls_key go together: give both or neither')
  if (problems.length) fail(`user-data refused:\n  ${problems.join('\n  ')}`)

  mkdirSync(out, { recursive: true, mode: 0o700 })
  const join_ = section.join ? (section.join.includes(':') ? section.join : `${section.join}:${MGMT_PORT}`) : ''
  writePrivate(join(out, 'options.sh'), [
    `UD_JOIN=${shellQuote(join_)}`,
    `UD_NODE_NAME=${shellQuote(section.node_name ?? '')}`,
    `UD_ADMIN_PASSWORD_HASH=${shellQuote(section.admin_password_hash ?? '')}`,
    `UD_TLS=${section.tls_cert ? 1 : 0}`,
    `UD_CLUSTER_SECRET=${section.cluster_secret ? 1 : 0}`,
    `UD_PROVISIONING=${shellQuote(section.provisioning ?? '')}`,
    `UD_CLUSTER_PEERS=${shellQuote((section.cluster_peers ?? []).join(','))}`,
    `UD_MQTT_PLAINTEXT=${section.mqtt_plaintext === true ? 1 : 0}`,
    '',
  ].join('\n'))
  if (section.tls_cert) {
    mkdirSync(join(out, 'tls'), { recursive: true, mode: 0o700 })
    writePrivate(join(out, 'tls', 'cert.pem'), section.tls_cert.endsWith('\n') ? section.tls_cert : `${section.tls_cert}\n`)
    writePrivate(join(out, 'tls', 'key.pem'), section.tls_key.endsWith('\n') ? section.tls_key : `${section.tls_key}\n`)
  }
  if (section.cluster_secret) writePrivate(join(out, 'cluster-secret'), `${section.cluster_secret}\n`)
}

/** Cloud metadata (no secrets in it: instance-data.json is world-readable), or {} outside a cloud. */
function cloudMetadata() {
  try {
    return JSON.parse(readFileSync('/run/cloud-init/instance-data.json', 'utf8')).ds?.meta_data ?? {}
  } catch {
    return {}
  }
}

/** `san --hostname H [--fqdn F]`: the subjectAltName list for the self-signed certificate. */
function san() {
  const dns = new Set(['localhost', arg('hostname')])
  const fqdnIndex = process.argv.indexOf('--fqdn')
  if (fqdnIndex > 0 && process.argv[fqdnIndex + 1]) dns.add(process.argv[fqdnIndex + 1])
  const ips = new Set(['127.0.0.1', '::1'])
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (!a.address.startsWith('fe80')) ips.add(a.address)
  }
  // EC2 and OpenStack publish the public name and address the instance is reached on.
  const meta = cloudMetadata()
  for (const key of ['public-hostname', 'local-hostname', 'hostname']) {
    if (typeof meta[key] === 'string' && /^[A-Za-z0-9.-]+$/.test(meta[key])) dns.add(meta[key])
  }
  for (const key of ['public-ipv4', 'local-ipv4']) {
    if (typeof meta[key] === 'string' && /^[0-9.]+$/.test(meta[key])) ips.add(meta[key])
  }
  process.stdout.write([...[...dns].filter(Boolean).map((d) => `DNS:${d}`), ...[...ips].map((ip) => `IP:${ip}`)].join(','))
}

/**
 * `env --role seed|join --node-name N --address A [--seed HOST:PORT] [--peers LIST] [--mqtt-plaintext]
 * --out FILE`: the node env file the configure phase reads. A seed runs its own Redis primary and
 * Sentinel; a joining node replicates the seed's Redis and gets the cluster section from the seed
 * (join). A seed without peers is standalone: management, Redis and Sentinel on loopback only.
 */
function env() {
  const role = arg('role')
  const nodeName = arg('node-name')
  const address = arg('address')
  if (role !== 'seed' && role !== 'join') fail(`--role ${role}: use seed or join`)
  const peersIndex = process.argv.indexOf('--peers')
  const peers = peersIndex > 0 ? (process.argv[peersIndex + 1] ?? '').split(',').filter(Boolean) : []
  const bad = peers.filter((p) => !isNetwork(p))
  if (bad.length) fail(`--peers ${bad.join(',')}: expected addresses or CIDRs`)
  const plaintext = process.argv.includes('--mqtt-plaintext')
  // In a cluster (a seed with peers, or a joining instance) the other members reach this one's
  // management API; the host firewall admits them only. Standalone, nobody needs it from outside.
  const clustered = role === 'join' || peers.length > 0
  const broker = {
    listeners: [
      // Plaintext MQTT sends passwords in clear: only when the user-data asks for it.
      ...(plaintext ? [{ type: 'mqtt', host: '0.0.0.0', port: MQTT_PORT }] : []),
      { type: 'mqtts', host: '0.0.0.0', port: MQTTS_PORT, tls: { cert: `${ETC}/tls/cert.pem`, key: `${ETC}/tls/key.pem` } },
    ],
    // Anything but /healthz and /readyz needs credentials, the cluster secret from another host.
    mgmt: { enabled: true, host: clustered ? '0.0.0.0' : '127.0.0.1', port: MGMT_PORT },
    cluster: {
      nodeId: nodeName,
      secretFile: `${ETC}/secrets/cluster-secret`,
      advertiseMgmt: `${address}:${MGMT_PORT}`,
      // Every instance runs a Sentinel: the local one is always there to ask for the primary (and,
      // standalone, the only one, on loopback).
      ...(role === 'seed'
        ? { redis: { sentinels: [`127.0.0.1:${SENTINEL_PORT}`], name: SENTINEL_MASTER, passwordFile: `${ETC}/secrets/redis-password` } }
        : {}),
    },
    log: { format: 'json' },
  }
  const checked = validateConfig(broker)
  if (!checked.ok) fail(`the broker refuses the first-boot settings:\n  ${checked.errors.join('\n  ')}`)
  const firewall = { peers, ...(plaintext ? { plaintextFrom: ['0.0.0.0/0', '::/0'] } : {}) }
  const provision = role === 'seed'
    ? { role: 'seed', redisRole: 'primary', nodeName, advertiseAddress: address, ...firewall }
    : { role: 'join', seed: arg('seed'), redisRole: 'replica', nodeName, advertiseAddress: address, ...firewall }
  writePrivate(arg('out'), renderEnvFile({ ...broker, provision }, `FleetMQ first boot of ${nodeName} (${role})`))
}

/**
 * `descriptor --seed HOST:PORT --secret-file F --out DIR`: asks the seed for the cluster
 * descriptor (a request signed with the cluster secret; the answer is sealed for it) and stages the
 * Redis password a replica needs. Over https: the seed's management API serves the certificate
 * provisioning made it of the cluster CA, which this instance derives from the same secret.
 */
async function descriptor() {
  const seed = arg('seed')
  const secret = readFileSync(arg('secret-file'), 'utf8').trim()
  const url = `https://${seed}/api/v1/cluster/descriptor`
  const caDir = mkdtempSync(join(tmpdir(), 'fleetmq-ca-'))
  ensureClusterCaCertificate(secret, join(caDir, 'ca.pem'))
  const ca = readFileSync(join(caDir, 'ca.pem'))
  rmSync(caDir, { recursive: true, force: true })
  let last = ''
  // The seed may still be booting: keep asking for a while.
  const deadline = Date.now() + Number(process.env.FLEETMQ_JOIN_WAIT_SECONDS ?? 600) * 1000
  while (Date.now() < deadline) {
    try {
      const signed = signRequest(secret, 'GET', '/api/v1/cluster/descriptor')
      const res = await mgmtRequest(url, { method: 'GET', headers: { authorization: signed.authorization }, ca, timeoutMs: 5000 })
      const answer = res.body
      const ok = res.status >= 200 && res.status < 300
      if (res.status === 401 || res.status === 403) fail(`the seed ${seed} refuses the cluster secret (HTTP ${res.status}: ${answer.error ?? ''}); copy it from the seed's /root/fleetmq-credentials`)
      const body = ok && typeof answer.sealed === 'string' ? unseal(secret, signed.nonce, answer.sealed) : {}
      if (ok && body.redis) {
        if (body.redis.password) writePrivate(join(arg('out'), 'redis-password'), `${body.redis.password}\n`)
        process.stdout.write(`${body.name}\n`)
        return
      }
      last = `HTTP ${res.status} ${answer.error ?? ''}`
    } catch (err) {
      last = describeFailure(err)
    }
    await new Promise((r) => setTimeout(r, 3000))
  }
  fail(`the seed ${seed} did not serve the cluster descriptor at ${url} (${last}); is it a FleetMQ instance that finished its first boot, and is this instance's address in the seed's cluster_peers (its firewall admits port ${MGMT_PORT} from those only)?`)
}

const commands = { userdata, san, env, descriptor }
const command = commands[process.argv[2]]
if (!command) fail(`usage: firstboot-helper.mjs <${Object.keys(commands).join('|')}> [options]`)
await command()
