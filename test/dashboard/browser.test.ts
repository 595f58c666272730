import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import mqtt from 'mqtt'
import { chromium, type Browser, type Page } from 'playwright-core'
import { startFleetmq, type RunningFleetmq } from '../helpers/fleetmq.js'

/*
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core) against a running
 * node: sign in, the overview and nodes pages show the node, a connected MQTT client is listed,
 * found by search and kicked from the page, sign out. The session cookie and CSRF rules are checked
 * with plain HTTP first. Screenshots of every page at desktop and phone sizes are left in
 * .artifacts/dashboard/ (git-ignored) for a person to look at.
 */

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = resolve(import.meta.dirname, '../../.artifacts/dashboard')
const ADMIN = { username: 'ops', password: 'a-long-admin-password', admin: true }
const SIZES = [{ name: 'desktop', width: 1280, height: 800 }, { name: 'phone', width: 390, height: 844 }] as const
const require = createRequire(import.meta.url)

async function signIn(node: RunningFleetmq): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const res = await fetch(`http://127.0.0.1:${node.mgmtPort}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: ADMIN.username, password: ADMIN.password }) })
  assert.equal(res.status, 200, await res.clone().text())
  const setCookie = res.headers.get('set-cookie') ?? ''
  const body = (await res.json()) as { csrfToken: string; role: string }
  assert.equal(body.role, 'admin')
  return { cookie: setCookie.split(';')[0], csrf: body.csrfToken, setCookie }
}

test('a session cookie is HttpOnly and SameSite=Strict, and a change made with it needs the CSRF token', async () => {
  const node = await startFleetmq({ users: [ADMIN] })
  const base = `http://127.0.0.1:${node.mgmtPort}`
  try {
    const page = await fetch(`${base}/`)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-type') ?? '', /text\/html/)
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/)

    const wrong = await fetch(`${base}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: ADMIN.username, password: 'not-it' }) })
    assert.equal(wrong.status, 401)
    assert.equal(wrong.headers.get('set-cookie'), null)

    const { cookie, csrf, setCookie } = await signIn(node)
    assert.match(setCookie, /; HttpOnly/)
    assert.match(setCookie, /; SameSite=Strict/)
    assert.doesNotMatch(setCookie, /Secure/, 'plain HTTP: a Secure cookie would never come back')

    assert.equal((await fetch(`${base}/api/v1/nodes`)).status, 401, 'no cookie, no credentials')
    assert.equal((await fetch(`${base}/api/v1/nodes`, { headers: { cookie } })).status, 200, 'a read with the cookie')
    const forged = await fetch(`${base}/api/v1/publish`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ topic: 't', payload: 'x' }) })
    assert.equal(forged.status, 403, 'a change with the cookie and no CSRF token is refused')
    assert.match(((await forged.json()) as { message: string }).message, /CSRF token/)
    const wrongToken = await fetch(`${base}/api/v1/clients/nobody`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': `${csrf}x` } })
    assert.equal(wrongToken.status, 403)
    const withToken = await fetch(`${base}/api/v1/publish`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'content-type': 'application/json' }, body: JSON.stringify({ topic: 't', payload: 'x' }) })
    assert.equal(withToken.status, 200, await withToken.clone().text())

    assert.equal((await fetch(`${base}/ui/session`, { method: 'DELETE', headers: { cookie } })).status, 403, 'signing out needs the token too')
    assert.equal((await fetch(`${base}/ui/session`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrf } })).status, 204)
    assert.equal((await fetch(`${base}/api/v1/nodes`, { headers: { cookie } })).status, 401, 'the cookie is dead after sign-out')
  } finally {
    await node.stop()
  }
})

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

test('a user\'s dashboard session ends when the user gets a new password, loses admin or is removed', async () => {
  const OTHER = { username: 'ops2', password: 'another-long-admin-password', admin: true }
  const node = await startFleetmq({ users: [ADMIN, OTHER] })
  const base = `http://127.0.0.1:${node.mgmtPort}`
  const asAdmin = { authorization: `Basic ${Buffer.from(`${ADMIN.username}:${ADMIN.password}`).toString('base64')}`, 'content-type': 'application/json' }
  // The store's change reaches the node's login within 2 s (the file is watched): retry that long.
  const signInOther = async (password: string): Promise<string> => {
    const deadline = Date.now() + 2_000
    for (;;) {
      const res = await fetch(`${base}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: OTHER.username, password }) })
      if (res.status === 200 || Date.now() > deadline) {
        assert.equal(res.status, 200, await res.clone().text())
        return (res.headers.get('set-cookie') ?? '').split(';')[0]
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  const reads = async (cookie: string): Promise<number> => (await fetch(`${base}/api/v1/nodes`, { headers: { cookie } })).status
  const refusedWithin2s = async (cookie: string): Promise<number> => {
    const deadline = Date.now() + 2_000
    let status = await reads(cookie)
    while (status !== 401 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100))
      status = await reads(cookie)
    }
    return status
  }
  const change = async (method: string, body?: object): Promise<void> => {
    const res = await fetch(`${base}/api/v1/users/${OTHER.username}`, { method, headers: asAdmin, ...(body ? { body: JSON.stringify(body) } : {}) })
    assert.ok(res.status < 300, `${method} /api/v1/users/${OTHER.username}: ${res.status} ${await res.text()}`)
  }
  try {
    let cookie = await signInOther(OTHER.password)
    assert.equal(await reads(cookie), 200)
    await change('PATCH', { password: 'a-third-long-password' })
    assert.equal(await refusedWithin2s(cookie), 401, 'a new password ends the sessions opened with the old one')

    cookie = await signInOther('a-third-long-password')
    assert.equal(await reads(cookie), 200)
    await change('PATCH', { admin: false })
    assert.equal(await refusedWithin2s(cookie), 401, 'no longer an admin')

    await change('PATCH', { admin: true })
    cookie = await signInOther('a-third-long-password')
    assert.equal(await reads(cookie), 200)
    await change('DELETE')
    assert.equal(await refusedWithin2s(cookie), 401, 'removed')
  } finally {
    await node.stop()
  }
})

test('in chromium: sign in, see the node, find a connected client, kick it, sign out, at 1280×800 and 390×844', async () => {
  mkdirSync(ARTIFACTS, { recursive: true })
  const node = await startFleetmq({ users: [ADMIN], args: ['--allow-anonymous'] })
  const base = `http://127.0.0.1:${node.mgmtPort}`
  let browser: Browser | undefined
  const devices: mqtt.MqttClient[] = []
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
    for (const size of SIZES) {
      // bypassCSP only so that the axe-core script can be injected; the pages run under the node's CSP otherwise.
      const context = await browser.newContext({ viewport: { width: size.width, height: size.height }, bypassCSP: true })
      const page = await context.newPage()
      const errors: string[] = []
      page.on('pageerror', (err) => errors.push(err.message))
      await page.goto(`${base}/`)
      await shot(page, `sign-in-${size.name}`)
      await page.getByLabel('User name').fill(ADMIN.username)
      await page.getByLabel('Password').fill('wrong-password')
      await page.getByRole('button', { name: 'Sign in' }).click()
      await page.getByRole('alert').filter({ hasText: 'wrong user name or password' }).waitFor()
      await page.getByLabel('Password').fill(ADMIN.password)
      await page.getByRole('button', { name: 'Sign in' }).click()

      await page.getByRole('heading', { name: 'Overview' }).waitFor()
      await page.locator('#stat-nodes').filter({ hasText: '1 / 1' }).waitFor()
      const cookies = await context.cookies()
      assert.equal(cookies.find((c) => c.name === 'fleetmq_session')?.httpOnly, true)
      assert.equal(await page.evaluate(() => document.cookie), '', 'page scripts cannot read the session cookie')
      await shot(page, `overview-${size.name}`)

      await page.getByRole('link', { name: 'Nodes' }).click()
      const row = page.getByRole('row').filter({ hasText: '(this node)' })
      await row.waitFor()
      assert.match(await row.innerText(), /up/)
      assert.match(await row.innerText(), /0\.1\.0/)
      await shot(page, `nodes-${size.name}`)

      const clientId = `dash-device-${size.name}`
      const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${node.ports.mqtt}`, { clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5_000 })
      devices.push(device)
      await mqtt.connectAsync(`mqtt://127.0.0.1:${node.ports.mqtt}`, { clientId: `other-${size.name}`, reconnectPeriod: 0 }).then((c) => devices.push(c))
      const closed = new Promise<void>((resolveClosed) => device.once('close', () => resolveClosed()))

      await page.getByRole('link', { name: 'Clients' }).click()
      await page.getByRole('row').filter({ hasText: clientId }).waitFor()
      await page.getByLabel('Search by client id').fill(`device-${size.name}`)
      await page.locator('#clients-status').filter({ hasText: /^1 of / }).waitFor()
      assert.equal(await page.getByRole('row').filter({ hasText: `other-${size.name}` }).count(), 0, 'the search hides the others')
      await shot(page, `clients-${size.name}`)
      await page.getByRole('button', { name: `Kick ${clientId}` }).click()
      await closed
      await page.getByRole('status').filter({ hasText: `Disconnected ${clientId}` }).waitFor()
      await page.getByRole('row').filter({ hasText: clientId }).waitFor({ state: 'detached' })

      if (size.name === 'desktop') {
        await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') })
        for (const name of ['overview', 'nodes', 'clients']) {
          await page.goto(`${base}/#/${name}`)
          await page.getByRole('heading', { level: 1 }).filter({ hasText: new RegExp(name, 'i') }).waitFor()
          await page.addScriptTag({ path: require.resolve('axe-core/axe.min.js') })
          const violations = await page.evaluate(async () => {
            const result = await (window as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; nodes: unknown[] }[] }> } }).axe.run()
            return result.violations.map((v) => ({ id: v.id, impact: v.impact, count: v.nodes.length }))
          })
          const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
          assert.deepEqual(serious, [], `axe-core on ${name}: ${JSON.stringify(violations)}`)
        }
      }

      await page.getByRole('button', { name: 'Sign out' }).click()
      await page.getByRole('heading', { name: 'Sign in' }).waitFor()
      assert.equal((await page.request.get(`${base}/api/v1/nodes`)).status(), 401, 'signed out: the API refuses the browser')
      assert.deepEqual(errors, [], 'no script errors on the page')
      await context.close()
    }
  } finally {
    await browser?.close()
    for (const device of devices) device.end(true)
    await node.stop()
  }
})
