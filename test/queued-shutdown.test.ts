// SIGTERM with queued deliveries in flight: workers stop claiming, a send that answers within the
// grace is recorded as delivered, one that does not is cut and released (due again, the attempt
// not counted), and the process exits 0 either way.
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import t from 'tap'
import { startFakeSegment } from './fake-segment.js'
import { ADMIN_TOKEN, adminAuth } from './helper.js'
import { freePort } from './support/free-port.js'
import { startProcess, waitForOk } from './support/process.js'
import { testKey, waitFor } from './support/queued.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

for (const scenario of [
  { name: 'a send that answers within the grace is recorded as delivered', step: { delayMs: 600 }, expect: { state: 'delivered', attempts: 1 } },
  { name: 'a send still hanging at the grace is cut and released', step: { hang: true }, expect: { state: 'queued', attempts: 0 } }
] as const) {
  t.test(`SIGTERM: ${scenario.name}`, async (t) => {
    const fake = await startFakeSegment()
    t.teardown(() => fake.close())
    fake.fallback = scenario.step
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const dbPath = join(t.testdir(), 'segment-forwarder.db')
    const proc = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
      cwd: root,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        PORT: String(port),
        DATABASE_URL: `sqlite:${dbPath}`,
        ENCRYPTION_KEYS: testKey(),
        ADMIN_TOKEN,
        SEGMENT_API_URL: fake.url,
        SHUTDOWN_GRACE_MS: '4000',
        SEGMENT_ATTEMPT_TIMEOUT_MS: '10000',
        DELIVERY_LEASE_MS: '60000',
        PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
        LOG_LEVEL: 'info'
      }
    })
    await waitForOk(`${base}/readyz`, proc)
    const workspace = await (await fetch(`${base}/v1/admin/workspaces`, { method: 'POST', headers: { ...adminAuth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Drain' }) })).json() as { token: string }
    const headers = { authorization: `Bearer ${workspace.token}`, 'content-type': 'application/json' }
    const connection = await (await fetch(`${base}/v1/connections`, { method: 'POST', headers, body: JSON.stringify({ name: 'C', writeKey: 'wk_drain_queued_0001' }) })).json() as { id: string }
    const accepted = await fetch(`${base}/v1/connections/${connection.id}/actions/track-event`, { method: 'POST', headers: { ...headers, prefer: 'respond-async' }, body: JSON.stringify({ userId: 'u', event: 'e' }) })
    t.equal(accepted.status, 202)
    const { deliveryId } = await accepted.json() as { deliveryId: string }
    await fake.waitForRequests(1)
    proc.child.kill('SIGTERM')
    t.equal(await proc.exited, 0, 'exits 0')
    t.equal(fake.requests.length, 1, 'nothing else was claimed after the signal')

    const db = new Database(dbPath, { readonly: true })
    t.teardown(() => db.close())
    const row = db.prepare('SELECT state, attempts, lease FROM deliveries WHERE id = ?').get(deliveryId) as { state: string, attempts: number, lease: string | null }
    t.match(row, { ...scenario.expect, lease: null })
    if (scenario.expect.state === 'queued') {
      // Released, not leased: a restart sends it at once instead of after DELIVERY_LEASE_MS.
      const due = db.prepare('SELECT next_attempt_ms FROM deliveries WHERE id = ?').get(deliveryId) as { next_attempt_ms: number }
      t.ok(due.next_attempt_ms <= Date.now(), 'due now')
    }
    await waitFor('the log', () => proc.stdout().includes('shutting down') ? true : undefined, 5000)
  })
}
