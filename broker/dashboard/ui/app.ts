/*
 * The FleetMQ dashboard: plain TypeScript and the DOM, no framework. Pages are built with
 * textContent only (never innerHTML), so nothing a client sends (a client id, a user name) can
 * become markup. It talks to the management API v1 of the node that served it with the session
 * cookie, sending the session's CSRF token on every change. Pages refresh by polling every
 * REFRESH_MS while shown: one request per page per tick.
 */

const REFRESH_MS = 5_000
/** Points kept for the message-rate graph: 10 minutes at REFRESH_MS. */
const HISTORY = 120

interface Session { name: string; kind: string; role: string; csrfToken: string }
interface HostStats { cpus?: number; cpuPercent?: number; load?: number[]; memoryTotal?: number; memoryFree?: number; processRss?: number; processCpuPercent?: number }
interface NodeInfo { id: string; self: boolean; health: string; version: string; uptime: number; connections: number; msgInRate: number; msgOutRate: number; host?: string; system?: HostStats }
interface ClientInfo { clientid: string; username: string | null; ip: string | null; node: string; protocolVersion: number; connectedAt: string | null; subscriptions: number }
interface Page<T> { data: T[]; meta: { count: number; hasNext: boolean; incomplete?: boolean } }

let session: Session | undefined
let timer: number | undefined
const rates: { at: number; in: number; out: number }[] = []

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T

function h(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElement {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  for (const child of children) el.append(child)
  return el
}

class ApiFailure extends Error {
  constructor(readonly status: number, message: string) { super(message) }
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (method !== 'GET' && session) headers['x-csrf-token'] = session.csrfToken
  const res = await fetch(path, { method, headers, credentials: 'same-origin', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
  if (res.status === 401 && path !== '/ui/session') { signedOut(); throw new ApiFailure(401, 'signed out') }
  const text = await res.text()
  const parsed = text ? JSON.parse(text) as unknown : undefined
  if (!res.ok) throw new ApiFailure(res.status, (parsed as { message?: string } | undefined)?.message ?? `HTTP ${res.status}`)
  return parsed as T
}

const fmtRate = (n: number): string => n >= 100 ? n.toFixed(0) : n.toFixed(1)
function fmtBytes(n: number | undefined): string {
  if (n === undefined) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}
function fmtUptime(s: number): string {
  const d = Math.floor(s / 86400), hrs = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60)
  return d > 0 ? `${d}d ${hrs}h` : hrs > 0 ? `${hrs}h ${m}m` : `${m}m ${s % 60}s`
}
const pct = (n: number | undefined): string => n === undefined ? '–' : `${n.toFixed(0)} %`

/** Each cell names its column, so that a phone can show a row as a stack of labelled values (style.css). */
function labelCells(row: HTMLElement, head: readonly string[]): HTMLElement {
  Array.from(row.children).forEach((cell, i) => cell.setAttribute('data-label', head[i] ?? ''))
  return row
}

function card(label: string, value: string, id: string): HTMLElement {
  return h('div', { class: 'card' }, h('dl', {}, h('dt', { id: `${id}-label` }, label), h('dd', { id, 'aria-labelledby': `${id}-label` }, value)))
}

function graph(): HTMLElement {
  const svgNs = 'http://www.w3.org/2000/svg'
  const svg = document.createElementNS(svgNs, 'svg')
  svg.setAttribute('viewBox', '0 0 600 120')
  svg.setAttribute('preserveAspectRatio', 'none')
  svg.setAttribute('role', 'img')
  const max = Math.max(1, ...rates.map((r) => Math.max(r.in, r.out)))
  const last = rates.at(-1)
  svg.setAttribute('aria-label', `Messages per second over the last ${Math.round(rates.length * REFRESH_MS / 60000) || 1} minutes; now ${fmtRate(last?.in ?? 0)} in, ${fmtRate(last?.out ?? 0)} out`)
  for (const [key, color] of [['in', '#0a58ca'], ['out', '#1a7f37']] as const) {
    const points = rates.map((r, i) => `${(i / Math.max(1, HISTORY - 1)) * 600},${118 - (r[key] / max) * 110}`).join(' ')
    const line = document.createElementNS(svgNs, 'polyline')
    line.setAttribute('points', points)
    line.setAttribute('fill', 'none')
    line.setAttribute('stroke', color)
    line.setAttribute('stroke-width', '2')
    line.setAttribute('vector-effect', 'non-scaling-stroke')
    svg.append(line)
  }
  return h('figure', { class: 'graph' }, h('figcaption', { class: 'legend' }, h('span', { class: 'in' }, '— in'), h('span', { class: 'out' }, '— out'), h('span', {}, `scale: ${fmtRate(max)} msg/s`)), svg)
}

async function overview(page: HTMLElement): Promise<void> {
  const nodes = (await api<Page<NodeInfo>>('GET', '/api/v1/nodes?limit=1000')).data
  const up = nodes.filter((n) => n.health === 'up')
  const msgIn = up.reduce((a, n) => a + n.msgInRate, 0)
  const msgOut = up.reduce((a, n) => a + n.msgOutRate, 0)
  rates.push({ at: Date.now(), in: msgIn, out: msgOut })
  if (rates.length > HISTORY) rates.shift()
  page.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      card('Nodes up', `${up.length} / ${nodes.length}`, 'stat-nodes'),
      card('Connections', String(up.reduce((a, n) => a + n.connections, 0)), 'stat-connections'),
      card('Messages in /s', fmtRate(msgIn), 'stat-in'),
      card('Messages out /s', fmtRate(msgOut), 'stat-out')),
    h('h2', {}, 'Message rates'),
    graph(),
    h('p', { class: 'note' }, `Refreshed every ${REFRESH_MS / 1000} s while this page is open; the graph starts when the page opens.`))
}

async function nodesPage(page: HTMLElement): Promise<void> {
  const nodes = (await api<Page<NodeInfo>>('GET', '/api/v1/nodes?limit=1000')).data
  const head = ['Node', 'Status', 'Version', 'Uptime', 'Connections', 'Msg in/out /s', 'Host CPU', 'Memory used', 'Load 1/5/15', 'Process RSS, CPU']
  const rows = nodes.map((n) => {
    const s = n.system ?? {}
    const memUsed = s.memoryTotal !== undefined && s.memoryFree !== undefined ? s.memoryTotal - s.memoryFree : undefined
    return labelCells(h('tr', { 'data-node': n.id },
      h('th', { scope: 'row' }, n.id + (n.self ? ' (this node)' : '')),
      h('td', { class: n.health }, n.health),
      h('td', {}, n.version),
      h('td', {}, fmtUptime(n.uptime)),
      h('td', {}, String(n.connections)),
      h('td', {}, `${fmtRate(n.msgInRate)} / ${fmtRate(n.msgOutRate)}`),
      h('td', {}, `${pct(s.cpuPercent)}${s.cpus !== undefined ? ` of ${s.cpus}` : ''}`),
      h('td', {}, `${fmtBytes(memUsed)} / ${fmtBytes(s.memoryTotal)}`),
      h('td', {}, s.load ? s.load.map((l) => l.toFixed(2)).join(' ') : '–'),
      h('td', {}, `${fmtBytes(s.processRss)}, ${pct(s.processCpuPercent)}`)), head)
  })
  page.replaceChildren(h('h1', {}, 'Nodes'),
    h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Nodes table', tabindex: '0' },
      h('table', {}, h('caption', { class: 'note' }, `${nodes.length} node${nodes.length === 1 ? '' : 's'}`),
        h('thead', {}, h('tr', {}, ...head.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, ...rows))))
}

let clientSearch = ''
async function clientsPage(page: HTMLElement): Promise<void> {
  const list = await api<Page<ClientInfo>>('GET', '/api/v1/clients?limit=1000')
  const shown = list.data.filter((c) => c.clientid.toLowerCase().includes(clientSearch.toLowerCase()))
  const canKick = session?.role === 'operator' || session?.role === 'admin'
  const status = h('p', { id: 'clients-status', class: 'note' }, `${shown.length} of ${list.meta.count} connected client${list.meta.count === 1 ? '' : 's'}${list.meta.hasNext ? ' (searching the first 1000)' : ''}${list.meta.incomplete ? '; a node did not answer' : ''}`)
  const head = ['Client id', 'User name', 'Address', 'Node', 'MQTT', 'Connected since', 'Subscriptions', 'Action']
  const rows = shown.map((c) => {
    const kick = h('button', { type: 'button', class: 'danger', 'aria-label': `Kick ${c.clientid}` }, 'Kick') as HTMLButtonElement
    kick.disabled = !canKick
    kick.addEventListener('click', () => {
      kick.disabled = true
      const said = $('clients-action')
      void api('DELETE', `/api/v1/clients/${encodeURIComponent(c.clientid)}`).then(
        () => { said.textContent = `Disconnected ${c.clientid}`; return render() },
        (err: Error) => { said.textContent = `Could not disconnect ${c.clientid}: ${err.message}`; kick.disabled = false })
    })
    return labelCells(h('tr', { 'data-client': c.clientid },
      h('th', { scope: 'row' }, c.clientid), h('td', {}, c.username ?? '–'), h('td', {}, c.ip ?? '–'), h('td', {}, c.node),
      h('td', {}, c.protocolVersion === 5 ? '5.0' : c.protocolVersion === 4 ? '3.1.1' : '3.1'),
      h('td', {}, c.connectedAt ? new Date(c.connectedAt).toLocaleString() : '–'), h('td', {}, String(c.subscriptions)), h('td', {}, kick)), head)
  })
  let input = document.getElementById('client-search') as HTMLInputElement | null
  if (!input || !page.contains(input)) {
    input = h('input', { id: 'client-search', type: 'search', autocomplete: 'off' }) as HTMLInputElement
    input.value = clientSearch
    input.addEventListener('input', () => { clientSearch = input!.value; void render() })
    page.replaceChildren(h('h1', {}, 'Clients'),
      h('div', { class: 'search', role: 'search' }, h('label', { for: 'client-search' }, 'Search by client id'), input),
      // Outside the part each refresh rebuilds, so a screen reader hears the outcome of a kick once.
      h('p', { id: 'clients-action', role: 'status', class: 'note' }),
      h('div', { id: 'clients-body' }))
  }
  $('clients-body').replaceChildren(status, h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Clients table', tabindex: '0' },
    h('table', {}, h('thead', {}, h('tr', {}, ...head.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, ...rows))))
}

const PAGES: Record<string, (page: HTMLElement) => Promise<void>> = { overview, nodes: nodesPage, clients: clientsPage }
const currentPage = (): string => { const name = location.hash.replace(/^#\//, ''); return name in PAGES ? name : 'overview' }

let rendering = false
async function render(): Promise<void> {
  if (!session || rendering) return
  rendering = true
  const name = currentPage()
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current')
  }
  const page = $('page')
  if (page.dataset.page !== name) { page.replaceChildren(h('p', { class: 'note' }, 'Loading…')); page.dataset.page = name }
  try {
    await PAGES[name](page)
  } catch (err) {
    if (!(err instanceof ApiFailure && err.status === 401)) page.replaceChildren(h('h1', {}, 'Error'), h('p', { class: 'error', role: 'alert' }, (err as Error).message))
  } finally {
    rendering = false
  }
}

function schedule(): void {
  if (timer !== undefined) clearInterval(timer)
  timer = window.setInterval(() => { if (document.visibilityState === 'visible') void render() }, REFRESH_MS)
}

function signedIn(s: Session): void {
  session = s
  $('sign-in').hidden = true
  $('nav').hidden = false
  $('who').hidden = false
  $('who-name').textContent = `${s.name} (${s.role})`
  $('page').hidden = false
  void render()
  schedule()
}

function signedOut(): void {
  session = undefined
  if (timer !== undefined) clearInterval(timer)
  timer = undefined
  rates.length = 0
  $('nav').hidden = true
  $('who').hidden = true
  $('page').hidden = true
  $('page').replaceChildren()
  delete $('page').dataset.page
  $('sign-in').hidden = false
}

function setup(): void {
  const form = $<HTMLFormElement>('sign-in-form')
  const method = (): string => (form.querySelector('input[name=method]:checked') as HTMLInputElement).value
  form.addEventListener('change', () => { $('user-fields').hidden = method() !== 'user'; $('key-fields').hidden = method() === 'user' })
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const body = method() === 'user'
      ? { username: $<HTMLInputElement>('username').value, password: $<HTMLInputElement>('password').value }
      : { apiKey: $<HTMLInputElement>('api-key').value }
    $('sign-in-error').textContent = ''
    api<Session>('POST', '/ui/session', body).then((s) => { form.reset(); $('user-fields').hidden = false; $('key-fields').hidden = true; signedIn(s) },
      (err: Error) => { $('sign-in-error').textContent = err.message })
  })
  $('sign-out').addEventListener('click', () => { void api('DELETE', '/ui/session').finally(signedOut) })
  window.addEventListener('hashchange', () => { void render(); $('main').focus() })
  api<Session>('GET', '/ui/session').then(signedIn, signedOut)
}

setup()
