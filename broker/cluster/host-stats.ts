import { availableParallelism, cpus, freemem, loadavg, totalmem } from 'node:os'

/*
 * What a node says about its host in its membership record (and so in `GET /api/v1/nodes`): CPU
 * busy share since the previous sample, load, memory, and the node process's own CPU and memory.
 */

export interface HostStats {
  readonly cpus: number
  /** Busy share of all CPUs since the previous sample, %. */
  readonly cpuPercent: number
  /** 1, 5 and 15 minute load averages. */
  readonly load: readonly number[]
  readonly memoryTotal: number
  readonly memoryFree: number
  readonly processRss: number
  /** The process's CPU time since the previous sample, % of one core. */
  readonly processCpuPercent: number
}

const round1 = (n: number): number => Math.round(n * 10) / 10

function cpuTimes(): { busy: number; total: number } {
  let busy = 0
  let total = 0
  for (const cpu of cpus()) {
    const { user, nice, sys, irq, idle } = cpu.times
    busy += user + nice + sys + irq
    total += user + nice + sys + irq + idle
  }
  return { busy, total }
}

/** A sampler: each call reports the CPU shares since the call before (the first, since the process started). */
export function hostSampler(): () => HostStats {
  let lastHost = { busy: 0, total: 0 }
  let lastProcess = { user: 0, system: 0 }
  let lastAt = 0
  return () => {
    const host = cpuTimes()
    const usage = process.cpuUsage()
    const at = process.uptime() * 1000
    const hostTotal = host.total - lastHost.total
    const processMicros = usage.user + usage.system - lastProcess.user - lastProcess.system
    const elapsed = at - lastAt
    const stats: HostStats = {
      cpus: availableParallelism(),
      cpuPercent: hostTotal > 0 ? round1(((host.busy - lastHost.busy) / hostTotal) * 100) : 0,
      load: loadavg().map(round1),
      memoryTotal: totalmem(),
      memoryFree: freemem(),
      processRss: process.memoryUsage.rss(),
      processCpuPercent: elapsed > 0 ? round1((processMicros / 1000 / elapsed) * 100) : 0,
    }
    lastHost = host
    lastProcess = usage
    lastAt = at
    return stats
  }
}
