// The PostgreSQL server stops and starts again under a running service: meanwhile every route that
// needs the store answers a coded 503 (never a 500, never a crash), readiness fails and liveness
// does not; once the server is back the same service process serves again, with no restart.
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { adminAuth, build, createConnection, createWorkspace } from './helper.js'
import { actionUrl, basicAuth, fakeSegment, WRITE_KEY } from './support/actions.js'
import { LocalPostgres } from './support/embedded-postgres.js'

const DATABASE_TIMEOUT_MS = 1000
// Generous: a failed request should take about DATABASE_TIMEOUT_MS at most, on a busy machine.
const OUTAGE_ANSWER_WITHIN_MS = 10 * DATABASE_TIMEOUT_MS

/**
 * A PostgreSQL server owned by this test, which it may stop and start at will (unlike the machine's
 * or the suite's shared one), on a free port, loopback TCP only; the same data folder across a
 * restart; removed at teardown.
 */
async function startOwnPostgres (t: Test): Promise<LocalPostgres> {
  const server = await LocalPostgres.create('segment-forwarder-outage-')
  t.teardown(async () => { await server.destroy() })
  await server.start()
  return server
}

async function poll (what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<number> {
  const started = Date.now()
  while (!await check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return Date.now() - started
}

// Skipped with the suite's PostgreSQL tests when no server could be started for them.
t.test('PostgreSQL stopped and restarted under a running service', { skip: process.env.PG_UNAVAILABLE ?? false }, async (t) => {
  const fake = await fakeSegment(t)
  const db = await startOwnPostgres(t)
  const { app, logs } = await build(t, {
    DATABASE_URL: db.url,
    ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
    DATABASE_TIMEOUT_MS: String(DATABASE_TIMEOUT_MS),
    SEGMENT_API_URL: fake.url,
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0'
  })
  const workspace = await createWorkspace(app)
  const { id: connectionId } = await createConnection(app, workspace, { writeKey: WRITE_KEY })
  const track = async (): Promise<LightMyRequestResponse> => await app.inject({
    method: 'POST', url: actionUrl(connectionId, 'track-event'), headers: workspace.auth, payload: { userId: 'u-1', event: 'Outage Checked' }
  })

  const before = await track()
  t.equal(before.statusCode, 200, 'an action succeeds before the outage')
  t.equal(fake.requests.at(-1)?.headers.authorization, basicAuth(WRITE_KEY))
  t.equal((await app.inject('/readyz')).statusCode, 200, 'ready before the outage')

  await db.stop()

  // Every route that needs the store, as a workspace and as the admin.
  const storeRoutes: Array<{ name: string, run: (app: FastifyInstance) => Promise<LightMyRequestResponse> }> = [
    { name: 'track-event', run: async () => await track() },
    { name: 'batch-send', run: async (app) => await app.inject({ method: 'POST', url: actionUrl(connectionId, 'batch-send'), headers: workspace.auth, payload: { batch: [{ type: 'identify', userId: 'u-1' }] } }) },
    { name: 'list connections', run: async (app) => await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth }) },
    { name: 'get connection', run: async (app) => await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}`, headers: workspace.auth }) },
    { name: 'create connection', run: async (app) => await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'Client B', writeKey: 'wk_outage_0123456789' } }) },
    { name: 'rotate write key', run: async (app) => await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/write-key`, headers: workspace.auth, payload: { writeKey: 'wk_outage_rotated_0123' } }) },
    { name: 'delete connection', run: async (app) => await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}`, headers: workspace.auth }) },
    { name: 'admin: create workspace', run: async (app) => await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: adminAuth, payload: { name: 'During Outage' } }) },
    { name: 'admin: list workspaces', run: async (app) => await app.inject({ method: 'GET', url: '/v1/admin/workspaces', headers: adminAuth }) }
  ]

  // Twice over, one at a time and then all at once: the pool must not wedge on failed connects.
  for (const round of ['one at a time', 'all at once']) {
    const started = Date.now()
    const answers = round === 'one at a time'
      ? await storeRoutes.reduce(async (done, route) => [...await done, await route.run(app)], Promise.resolve([] as LightMyRequestResponse[]))
      : await Promise.all(storeRoutes.map(async (route) => await route.run(app)))
    const took = Date.now() - started
    answers.forEach((answer, i) => {
      const name = `${storeRoutes[i]!.name} (${round})`
      t.equal(answer.statusCode, 503, `${name}: 503`)
      t.match(answer.headers['content-type'], /^application\/problem\+json/, `${name}: a problem document`)
      t.match(answer.json(), { status: 503, code: 'store_unavailable', title: 'Store unavailable' }, `${name}: coded store_unavailable`)
      t.ok(Number(answer.headers['retry-after']) >= 1, `${name}: Retry-After`)
    })
    t.ok(took < OUTAGE_ANSWER_WITHIN_MS, `${round}: answered in ${took} ms, not hung`)
  }

  const notReady = await app.inject('/readyz')
  t.equal(notReady.statusCode, 503, '/readyz answers 503 while the database is down')
  t.match(notReady.json(), { code: 'not_ready' })
  t.ok(Number(notReady.headers['retry-after']) >= 1)
  const health = await app.inject('/healthz')
  t.equal(health.statusCode, 200, '/healthz stays 200')
  t.same(health.json(), { status: 'ok' })
  t.equal(fake.requests.length, 1, 'nothing reached Segment during the outage')

  // The same data folder, the same port; the service is not restarted.
  await db.start()
  const waited = await poll('/readyz after the restart', async () => (await app.inject('/readyz')).statusCode === 200)
  t.pass(`/readyz is 200 again ${waited} ms after PostgreSQL came back`)

  const after = await track()
  t.equal(after.statusCode, 200, 'an action succeeds again')
  t.equal(fake.requests.length, 2)
  t.equal(fake.requests.at(-1)?.headers.authorization, basicAuth(WRITE_KEY), 'with the Write Key stored before the outage')
  const connection = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}`, headers: workspace.auth })
  t.equal(connection.statusCode, 200, 'connection routes answer again')
  t.equal(connection.json().updatedAt, connection.json().createdAt, 'the rotation refused during the outage changed nothing')

  const lines = logs.map((line) => JSON.parse(line) as { code?: string, statusCode?: number, msg?: string })
  t.equal(lines.filter((line) => line.code === 'internal_error' || line.statusCode === 500).length, 0, 'no 500 was logged')
  t.ok(lines.some((line) => line.code === 'store_unavailable'), 'the outage was logged as store_unavailable')
})
