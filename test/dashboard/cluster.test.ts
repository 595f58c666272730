import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { chromium } from 'playwright-core'
import { clusterOnRedis, connect, getJson, tokenOf } from '../cluster/nodes.js'

/*
 * The dashboard of one node of a three-node cluster on a real Redis, in chromium, signed in with an
 * operator API key: it shows all three nodes up, and kicks a client connected to another node.
 * Screenshots go to .artifacts/dashboard/ (git-ignored).
 */

const ARTIFACTS = resolve(import.meta.dirname, '../../.artifacts/dashboard')
const nodes = clusterOnRedis(3)

test('a node\'s dashboard shows the three nodes of its cluster and kicks a client of another node, signed in with an API key', async () => {
  mkdirSync(ARTIFACTS, { recursive: true })
  const [first, , third] = nodes
  const made = await fetch(`http://127.0.0.1:${first.mgmtPort}/api/v1/apikeys`, { method: 'POST', headers: { ...tokenOf(first), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'dash-ops', role: 'operator' }) })
  assert.equal(made.status, 201)
  const key = ((await made.json()) as { key: string }).key
  const thirdId = ((await getJson(third.mgmtPort, '/api/v1/nodes', tokenOf(third))).body.data as { id: string; self: boolean }[]).find((n) => n.self)?.id
  assert.ok(thirdId)
  const device = await connect(third, { clientId: 'dash-cluster-device', protocolVersion: 5 })
  const closed = new Promise<void>((resolveClosed) => device.once('close', () => resolveClosed()))

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage()
    await page.goto(`http://127.0.0.1:${first.mgmtPort}/`)
    await page.getByLabel('an API key').check()
    await page.getByLabel('API key', { exact: true }).fill(key)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByText('dash-ops (operator)').waitFor()
    await page.locator('#stat-nodes').filter({ hasText: '3 / 3' }).waitFor()
    await page.screenshot({ path: join(ARTIFACTS, 'cluster-overview-desktop.png'), fullPage: true })

    await page.getByRole('link', { name: 'Nodes' }).click()
    await page.locator('tbody tr').nth(2).waitFor()
    assert.equal(await page.locator('tbody tr').count(), 3)
    assert.equal(await page.locator('tbody td.up').count(), 3, 'all three nodes up')
    await page.screenshot({ path: join(ARTIFACTS, 'cluster-nodes-desktop.png'), fullPage: true })

    await page.getByRole('link', { name: 'Clients' }).click()
    const row = page.getByRole('row').filter({ hasText: 'dash-cluster-device' })
    await row.waitFor()
    assert.match(await row.innerText(), new RegExp(thirdId), 'listed with the node that holds it')
    await page.screenshot({ path: join(ARTIFACTS, 'cluster-clients-desktop.png'), fullPage: true })
    await page.getByRole('button', { name: 'Kick dash-cluster-device' }).click()
    await closed
    await row.waitFor({ state: 'detached' })
  } finally {
    await browser.close()
    device.end(true)
  }
})
