/*
 * The local stack's layout, as pure functions: which port each part gets from `--ports BASE`, and
 * the HAProxy config that stands in for the AWS NLB. Tested without starting anything.
 */

export const DEFAULT_BASE_PORT = 21_000
export const MAX_NODES = 9

export interface NodePorts {
  readonly name: string
  /** MQTT over TCP, PROXY v2 required: only HAProxy talks to it. */
  readonly mqtt: number
  /** MQTT over WebSocket, PROXY v2 required. */
  readonly ws: number
  readonly mgmt: number
}

export interface StackPlan {
  readonly nodes: readonly NodePorts[]
  /** What clients use: HAProxy's fronts. */
  readonly front: { readonly mqtt: number; readonly mqtts: number; readonly wss: number }
  readonly redis: readonly number[]
  readonly sentinels: readonly number[]
  /** With `--with kafka`: Kafka's client and controller ports. */
  readonly kafka?: { readonly port: number; readonly controller: number }
}

/** Servers `--with` can add beside the cluster. */
export const WITH_SERVICES = ['kafka'] as const
export type WithService = (typeof WITH_SERVICES)[number]

/** `--with kafka` (a comma-separated list): the known names, or an error naming the unknown one. */
export function parseWith(value: string): WithService[] {
  const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const name of names) {
    if (!(WITH_SERVICES as readonly string[]).includes(name)) {
      const planned = ['rabbitmq', 'postgres', 'mysql', 'influxdb'].includes(name) ? ` (${name} is not built yet)` : ''
      throw new Error(`--with takes ${WITH_SERVICES.join(', ')}, got "${name}"${planned}`)
    }
  }
  return [...new Set(names)] as WithService[]
}

/**
 * BASE+0 MQTT, BASE+1 MQTT/TLS, BASE+2 WSS (the load balancer); BASE+10+i, BASE+20+i, BASE+30+i a
 * node's MQTT, WS and management ports; BASE+40+i Redis (primary first), BASE+50+i Sentinel;
 * with Kafka, BASE+3 its clients' port and BASE+4 its controller's.
 */
export function planStack(base: number, nodeCount: number, withServices: readonly WithService[] = []): StackPlan {
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > MAX_NODES) {
    throw new Error(`--nodes must be a whole number from 1 to ${MAX_NODES}, got ${nodeCount}`)
  }
  if (!Number.isInteger(base) || base < 1024 || base + 60 > 65_535) {
    throw new Error(`--ports must be a whole number from 1024 to ${65_535 - 60} (the stack uses BASE to BASE+59), got ${base}`)
  }
  const nodes = Array.from({ length: nodeCount }, (_, i) => ({
    name: `node${i + 1}`,
    mqtt: base + 10 + i,
    ws: base + 20 + i,
    mgmt: base + 30 + i,
  }))
  return {
    nodes,
    front: { mqtt: base, mqtts: base + 1, wss: base + 2 },
    redis: [0, 1, 2].map((i) => base + 40 + i),
    sentinels: [0, 1, 2].map((i) => base + 50 + i),
    ...(withServices.includes('kafka') ? { kafka: { port: base + 3, controller: base + 4 } } : {}),
  }
}

/** Every port of the plan, for the "port in use" check before anything starts. */
export function allPorts(plan: StackPlan): number[] {
  return [
    ...Object.values(plan.front),
    ...plan.nodes.flatMap((n) => [n.mqtt, n.ws, n.mgmt]),
    ...plan.redis,
    ...plan.sentinels,
    ...(plan.kafka ? [plan.kafka.port, plan.kafka.controller] : []),
  ]
}

/**
 * HAProxy in the NLB's place: TLS ends at the load balancer, the nodes get plain TCP with a PROXY
 * v2 header carrying the client's address. Health checks are plain TCP connects, as the NLB's.
 */
export function renderHaproxyConfig(plan: StackPlan, files: { pem: string; pidFile: string }): string {
  const servers = (port: (n: NodePorts) => number) =>
    plan.nodes.map((n) => `  server ${n.name} 127.0.0.1:${port(n)} send-proxy-v2 check inter 1s fall 2 rise 1`).join('\n')
  return `# Rendered by npm start: the local stand-in for the AWS network load balancer.
global
  pidfile ${files.pidFile}
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode tcp
  timeout connect 5s
  # The NLB's idle timeout for TLS listeners is 350 s; brokers cap keep-alive at 300 s and give
  # 5.0 clients asking for none a Server Keep Alive of 300 s.
  timeout client 350s
  timeout server 350s
  option redispatch
  retries 3

frontend mqtt
  bind 127.0.0.1:${plan.front.mqtt}
  default_backend nodes_mqtt

frontend mqtts
  bind 127.0.0.1:${plan.front.mqtts} ssl crt ${files.pem}
  default_backend nodes_mqtt

frontend wss
  bind 127.0.0.1:${plan.front.wss} ssl crt ${files.pem}
  default_backend nodes_ws

backend nodes_mqtt
  balance roundrobin
${servers((n) => n.mqtt)}

backend nodes_ws
  balance roundrobin
${servers((n) => n.ws)}
`
}
