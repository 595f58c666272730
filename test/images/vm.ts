/*
 * VMs from the image under QEMU, for tests: TCG (this machine's KVM cannot boot a stock kernel),
 * user networking with restrict=on (the guest reaches nothing) and loopback port forwards, a
 * copy-on-write disk per VM over the built qcow2, and a NoCloud seed ISO (volume id `cidata`)
 * carrying the test's SSH key and any user-data.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { run } from '../../images/run.js'

export interface Vm {
  readonly name: string
  readonly sshPort: number
  readonly mqttPort: number
  readonly mqttsPort: number
  readonly startedAt: number
  serial(): string
  /** Runs a command as the `admin` user over SSH (sudo for root). */
  ssh(command: string, options?: { allowFailure?: boolean }): Promise<{ code: number | null; stdout: string; stderr: string }>
  /** Resolves once `text` shows on the serial console. */
  waitForSerial(text: string | RegExp, timeoutMs: number): Promise<void>
  stop(): Promise<void>
}

async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  server.close()
  await once(server, 'close')
  return port
}

export interface VmOptions {
  name: string
  baseImage: string
  keyFile: string
  publicKey: string
  /** Extra cloud-config (YAML lines after the SSH key). */
  userData?: string
}

export async function bootVm(options: VmOptions): Promise<Vm> {
  const dir = mkdtempSync(join(tmpdir(), `fleetmq-vm-${options.name}-`))
  const disk = join(dir, 'disk.qcow2')
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', options.baseImage, '-F', 'qcow2', disk])
  writeFileSync(join(dir, 'user-data'), `#cloud-config\nssh_authorized_keys:\n  - ${options.publicKey.trim()}\n${options.userData ?? ''}`)
  writeFileSync(join(dir, 'meta-data'), `instance-id: ${options.name}-${Date.now()}\nlocal-hostname: ${options.name}\n`)
  const seed = join(dir, 'seed.iso')
  await run('genisoimage', ['-quiet', '-output', seed, '-volid', 'cidata', '-joliet', '-rock', join(dir, 'user-data'), join(dir, 'meta-data')])
  const [sshPort, mqttPort, mqttsPort] = [await freePort(), await freePort(), await freePort()]
  const serialFile = join(dir, 'serial.log')
  const forwards = [[sshPort, 22], [mqttPort, 1883], [mqttsPort, 8883]].map(([host, guest]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`).join(',')
  const startedAt = Date.now()
  const qemu: ChildProcess = spawn('qemu-system-x86_64', [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-smp', '2', '-display', 'none', '-monitor', 'none',
    '-drive', `file=${disk},format=qcow2,if=virtio`, '-drive', `file=${seed},format=raw,if=virtio,readonly=on`,
    '-netdev', `user,id=n0,restrict=on,${forwards}`, '-device', 'virtio-net,netdev=n0',
    '-serial', `file:${serialFile}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let qemuErr = ''
  qemu.stderr?.on('data', (d: Buffer) => { qemuErr += d })
  let exited = false
  const exit = once(qemu, 'exit').then(() => { exited = true })
  const serial = (): string => (existsSync(serialFile) ? readFileSync(serialFile, 'latin1') : '')
  const sshArgs = ['-i', options.keyFile, '-p', String(sshPort), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10', 'admin@127.0.0.1']
  return {
    name: options.name,
    sshPort,
    mqttPort,
    mqttsPort,
    startedAt,
    serial,
    ssh: (command, opts = {}) => run('ssh', [...sshArgs, command], { allowFailure: opts.allowFailure }),
    async waitForSerial(text, timeoutMs) {
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline) {
        if (exited) throw new Error(`VM ${options.name} exited: ${qemuErr}\n${serial().slice(-3000)}`)
        const out = serial()
        if (typeof text === 'string' ? out.includes(text) : text.test(out)) return
        await sleep(1000)
      }
      throw new Error(`VM ${options.name}: "${String(text)}" not on the serial console within ${timeoutMs / 1000} s; it ends with:\n${serial().slice(-4000)}`)
    },
    async stop() {
      if (!exited) {
        qemu.kill('SIGTERM')
        await Promise.race([exit, sleep(10_000)])
        if (!exited) { qemu.kill('SIGKILL'); await exit }
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
