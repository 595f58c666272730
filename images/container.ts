/*
 * Stopping a `systemd-nspawn --boot` container for certain: the image build's port check and the
 * image tests boot the image's root filesystem this way, and a container left running keeps its
 * systemd, Redis and FleetMQ (and a network namespace) alive on a shared machine.
 */
import type { ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * systemd halts on SIGRTMIN+3 (what `machinectl poweroff` sends). Node knows no real-time signal
 * names (`process.kill(pid, 'SIGRTMIN+3')` throws ERR_UNKNOWN_SIGNAL): glibc's SIGRTMIN is 34 on
 * Linux, so the number is 37.
 */
export const SIGRTMIN_PLUS_3 = 37

/** A unique, valid machine name (a host name: at most 64 characters). */
export function machineName(prefix: string): string {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`.slice(0, 64)
}

/** True while `pid` runs (a zombie waiting for nspawn to reap it has ended). */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** Sends `signal` to `pid`; a process already gone is fine, anything else (EPERM) is thrown. */
function signal(pid: number, sig: number | NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

async function waitUntil(done: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!done() && Date.now() < deadline) await sleep(100)
  return done()
}

export interface Container {
  /** The container's PID 1 (its systemd) as this machine sees it; 0 when it never started. */
  pid1: number
  /** The `systemd-nspawn` process. */
  nspawn: ChildProcess
  /** The `-M` name: nspawn leaves /run/systemd/nspawn/propagate/<machine> behind. */
  machine: string
  /** Milliseconds systemd gets to halt before its PID 1 is killed (default 30 s). */
  haltTimeoutMs?: number
}

/**
 * Halts the container (SIGRTMIN+3 to its systemd), waits for its PID 1 to end within a bound,
 * kills PID 1 when it does not (SIGKILL to a PID namespace's init ends every process in it; killing
 * only nspawn would orphan the container), then nspawn, and removes the propagate folder.
 * Throws when the container still runs afterwards, naming its PID.
 */
export async function stopContainer(container: Container): Promise<void> {
  const { pid1, nspawn, machine } = container
  const nspawnDone = (): boolean => nspawn.exitCode !== null || nspawn.signalCode !== null
  if (pid1 > 0 && running(pid1)) {
    signal(pid1, SIGRTMIN_PLUS_3)
    if (!(await waitUntil(() => !running(pid1), container.haltTimeoutMs ?? 30_000))) {
      process.stderr.write(`# container ${machine}: systemd (PID ${pid1}) did not halt in time; killing it\n`)
      signal(pid1, 'SIGKILL')
      await waitUntil(() => !running(pid1), 10_000)
    }
  }
  // nspawn exits once its container has; without a container (it failed to start) it is killed.
  if (!(await waitUntil(nspawnDone, 10_000)) && nspawn.pid !== undefined) {
    signal(nspawn.pid, 'SIGKILL')
    await waitUntil(nspawnDone, 10_000)
  }
  rmSync(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true, force: true })
  if (pid1 > 0 && running(pid1)) throw new Error(`container ${machine} still runs (PID 1 is ${pid1}) after SIGRTMIN+3 and SIGKILL`)
  if (!nspawnDone()) throw new Error(`systemd-nspawn of ${machine} (PID ${nspawn.pid}) still runs after SIGKILL`)
}

/**
 * The container's PID 1 as this machine sees it: the child of nspawn that is PID 1 of its own PID
 * namespace (`NSpid: <ours> 1`). Not simply nspawn's first child: nspawn's intermediate "outer
 * child" is one too until it exits, and on a busy machine it lives long enough to be picked.
 * 0 if nspawn exits first or `timeoutMs` passes.
 */
export async function containerPid1(nspawn: ChildProcess, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && nspawn.exitCode === null && nspawn.signalCode === null && nspawn.pid !== undefined) {
    try {
      for (const task of readdirSync(`/proc/${nspawn.pid}/task`)) {
        for (const child of readFileSync(`/proc/${nspawn.pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
          const nspid = /^NSpid:\s+(.+)$/m.exec(readFileSync(`/proc/${child}/status`, 'utf8'))?.[1].trim().split(/\s+/) ?? []
          if (nspid.length > 1 && nspid[nspid.length - 1] === '1') return Number(child)
        }
      }
    } catch {
      // nspawn or a child exited meanwhile; the next round (or the loop condition) sees it.
    }
    await sleep(100)
  }
  return 0
}
