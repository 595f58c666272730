import mqtt from 'mqtt'
import { readFileSync } from 'node:fs'
import type { StackPlan } from './plan.js'
import type { StackSecrets } from './secrets.js'

/**
 * The readiness proof: through HAProxy's TLS front, a subscriber and a publisher on two different
 * connections (round robin puts them on different nodes) exchange a QoS 1 message.
 */
export async function checkThroughLoadBalancer(plan: StackPlan, secrets: StackSecrets, timeoutMs = 15_000): Promise<void> {
  const options = {
    ca: readFileSync(secrets.caFile),
    username: secrets.adminUser,
    password: secrets.adminPassword,
    protocolVersion: 5 as const,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  }
  const url = `mqtts://127.0.0.1:${plan.front.mqtts}`
  const sub = await mqtt.connectAsync(url, { ...options, clientId: `stack-check-sub-${process.pid}` })
  const pub = await mqtt.connectAsync(url, { ...options, clientId: `stack-check-pub-${process.pid}` })
  try {
    const topic = `$fleetmq-check/${process.pid}/${Date.now()}`.replace('$', '')
    await sub.subscribeAsync(topic, { qos: 1 })
    const received = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message through the load balancer within ${timeoutMs} ms`)), timeoutMs)
      sub.on('message', (t) => { if (t === topic) { clearTimeout(timer); resolve() } })
    })
    // The subscription may need a moment to reach the other nodes through Redis: publish until it arrives.
    const repeat = setInterval(() => void pub.publishAsync(topic, 'ready', { qos: 1 }).catch(() => undefined), 500)
    try {
      await pub.publishAsync(topic, 'ready', { qos: 1 })
      await received
    } finally {
      clearInterval(repeat)
    }
  } finally {
    await Promise.all([sub.endAsync(true), pub.endAsync(true)])
  }
}
