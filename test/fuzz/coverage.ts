import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'

/*
 * Coverage feedback from the broker process itself, over the V8 inspector protocol: the broker runs
 * with `--inspect=127.0.0.1:PORT`, and after each batch of inputs the fuzzer takes V8's precise
 * block coverage (`Profiler.takePreciseCoverage`, which resets the counters it reports). A block
 * that never ran before makes the batch interesting. This is the signal libFuzzer gets from
 * SanitizerCoverage, taken from the real process that serves the sockets.
 */

interface Range {
  startOffset: number
  endOffset: number
  count: number
}

interface ScriptCoverage {
  url: string
  functions: { functionName: string; ranges: Range[] }[]
}

/** The code whose blocks count as coverage: the broker and the libraries that parse network input. */
const FEEDBACK = /\/build\/broker\/|\/node_modules\/(aedes|aedes-[a-z-]+|mqtt-packet|ws|bl)\/(?!node_modules)/

/** The parsers the report names, each with the code that reads network bytes. */
export const PARSER_MODULES: readonly { readonly name: string; readonly match: RegExp }[] = [
  { name: 'broker/core/wire.ts (lean parser, taps)', match: /\/build\/broker\/core\/wire\.js$/ },
  { name: 'mqtt-packet parser.js', match: /\/node_modules\/mqtt-packet\/parser\.js$/ },
  { name: 'aedes lib/handlers/*.js', match: /\/node_modules\/aedes\/lib\/handlers\/[a-z]+\.js$/ },
  { name: 'broker/listeners/proxy-protocol.ts', match: /\/build\/broker\/listeners\/proxy-protocol\.js$/ },
  { name: 'broker/listeners/ws.ts', match: /\/build\/broker\/listeners\/ws\.js$/ },
  { name: 'ws lib/receiver.js (frames)', match: /\/node_modules\/ws\/lib\/receiver\.js$/ },
  { name: 'ws lib/websocket-server.js (handshake)', match: /\/node_modules\/ws\/lib\/websocket-server\.js$/ },
  { name: 'broker/mgmt/http.ts', match: /\/build\/broker\/mgmt\/http\.js$/ },
]

export class BrokerCoverage {
  private nextId = 0
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>()
  /** Blocks (script, start, end) seen with a non-zero count. */
  private readonly seen = new Set<string>()
  /** Per parser module script: which source bytes ran at least once. */
  private readonly ran = new Map<string, Uint8Array>()
  /** True once the broker's JavaScript context is gone: the process is on its way out. */
  exiting = false

  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as { id?: number; method?: string; result?: unknown; error?: { message: string } }
      if (message.method === 'Runtime.executionContextDestroyed') {
        // The process is exiting (a crash, say). With a debugger attached Node waits for it to
        // disconnect before it exits: let it go.
        this.exiting = true
        socket.close()
      }
      if (message.id === undefined) return
      const waiter = this.pending.get(message.id)
      this.pending.delete(message.id)
      if (message.error) waiter?.reject(new Error(message.error.message))
      else waiter?.resolve(message.result)
    })
    socket.on('close', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('the broker\'s inspector closed'))
      this.pending.clear()
    })
  }

  /** Connects to the inspector at `port` and starts block coverage with counts. */
  static async attach(port: number): Promise<BrokerCoverage> {
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as { webSocketDebuggerUrl: string }[]
    const socket = new WebSocket(targets[0].webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 1 << 30 })
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
    })
    const coverage = new BrokerCoverage(socket)
    await coverage.call('Runtime.enable')
    await coverage.call('Profiler.enable')
    await coverage.call('Profiler.startPreciseCoverage', { callCount: true, detailed: true })
    // What ran before (start-up) is not any input's doing.
    await coverage.collect()
    return coverage
  }

  private call(method: string, params: object = {}): Promise<unknown> {
    const id = ++this.nextId
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.socket.send(JSON.stringify({ id, method, params }))
    })
  }

  private async take(): Promise<ScriptCoverage[]> {
    const { result } = await this.call('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] }
    return result
  }

  /** Takes the coverage since the last call; answers the blocks that ran for the first time. */
  async collect(): Promise<string[]> {
    const fresh: string[] = []
    for (const key of this.absorb(await this.take())) {
      if (this.seen.has(key)) continue
      this.seen.add(key)
      fresh.push(key)
    }
    return fresh
  }

  /** Takes the coverage since the last call; answers the blocks that ran, new or not. */
  async hits(): Promise<Set<string>> {
    return this.absorb(await this.take())
  }

  /** Blocks seen so far, in the broker and the parsing libraries. */
  get blocks(): number {
    return this.seen.size
  }

  private absorb(scripts: ScriptCoverage[]): Set<string> {
    const hit = new Set<string>()
    for (const script of scripts) {
      if (!FEEDBACK.test(script.url)) continue
      const parser = PARSER_MODULES.some((m) => m.match.test(script.url))
      for (const fn of script.functions) {
        for (const range of fn.ranges) {
          if (range.count > 0) hit.add(`${script.url}|${range.startOffset}|${range.endOffset}`)
        }
        if (parser) this.markRan(script.url, fn.ranges)
      }
    }
    return hit
  }

  /** V8 nests ranges: the innermost range that holds a byte gives its count. */
  private markRan(url: string, ranges: Range[]): void {
    let ran = this.ran.get(url)
    if (ran === undefined) {
      // V8's offsets count UTF-16 code units of the source text, not bytes.
      ran = new Uint8Array(readFileSync(fileURLToPath(url), 'utf8').length)
      this.ran.set(url, ran)
    }
    const state = new Uint8Array(ranges[0].endOffset - ranges[0].startOffset)
    const base = ranges[0].startOffset
    for (const range of ranges) state.fill(range.count > 0 ? 1 : 0, range.startOffset - base, range.endOffset - base)
    for (let i = 0; i < state.length; i++) if (state[i] === 1) ran[base + i] = 1
  }

  /**
   * Line coverage of each parser module, as c8 counts it: a line with code is covered when its first
   * non-blank character ran. Lines inside functions that never ran are uncovered; the list of those
   * functions comes from the V8 coverage file the broker wrote at exit (NODE_V8_COVERAGE), which
   * names every function of every script.
   */
  lineCoverage(v8CoverageDir: string): { module: string; covered: number; lines: number }[] {
    const scripts = new Map<string, ScriptCoverage>()
    for (const file of readdirSync(v8CoverageDir)) {
      const dump = JSON.parse(readFileSync(join(v8CoverageDir, file), 'utf8')) as { result: ScriptCoverage[] }
      for (const script of dump.result) scripts.set(script.url, script)
    }
    return PARSER_MODULES.map(({ name, match }) => {
      let covered = 0
      let lines = 0
      for (const url of scripts.keys()) {
        if (!match.test(url)) continue
        // The exit dump holds the counts since the last take: they count too.
        for (const fn of scripts.get(url)!.functions) this.markRan(url, fn.ranges)
        const ran = this.ran.get(url)!
        const source = readFileSync(fileURLToPath(url), 'utf8')
        let offset = 0
        for (const line of source.split('\n')) {
          const indent = line.length - line.trimStart().length
          const text = line.trim()
          const code = text !== '' && !/^(\/\/|\/\*|\*)/.test(text) && !/^[})\]];?,?$/.test(text)
          if (code) {
            lines++
            if (ran[offset + indent] === 1) covered++
          }
          offset += line.length + 1
        }
      }
      return { module: name, covered, lines }
    })
  }

  close(): void {
    this.socket.close()
  }
}
