// Queued delivery, operations side, on both stores: rewrap of queued events, a store that cannot
// commit (503 store_unavailable, nothing queued), pacing per Write Key after a 429.
import Database from 'better-sqlite3'
import pg from 'pg'
import t from 'tap'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { KeyRing } from '../src/store/crypto.js'
import { rewrap } from '../src/store/rewrap.js'
import { parseEncryptionKeys } from '../src/config.js'
import { ADMIN_TOKEN, createConnection, logCapture } from './helper.js'
import { basicAuth } from './support/actions.js'
import { getDelivery, QUEUED_ENV, respondAsync, setupQueued, storeEnv, STORES, testKey, waitFor, waitForState } from './support/queued.js'
import { postgresSkip } from './support/postgres.js'

for (const kind of STORES) {
  t.test(`${kind}: rewrap re-encrypts queued events; they are delivered under the new key alone`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const oldKey = testKey()
    const newKey = testKey()
    const env = { ...await storeEnv(t, kind), ENCRYPTION_KEYS: oldKey }
    const { app, fake, config, connectionId, workspace, send } = await setupQueued(t, kind, env)
    fake.fallback = { status: 503 }
    const id = (await send('track-event', { userId: 'u', event: 'rewrapped' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await app.close()

    const ring = new KeyRing(parseEncryptionKeys(`${newKey},${oldKey}`))
    const storeConfig = loadConfig({ ...QUEUED_ENV, DATABASE_URL: kind === 'sqlite' ? `sqlite:${(config.database as { path: string }).path}` : (config.database as { url: string }).url, ENCRYPTION_KEYS: `${newKey},${oldKey}`, ADMIN_TOKEN, LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0', RATE_LIMIT_MAX: '0' })
    const withBoth = await buildApp(storeConfig, { logStream: logCapture().stream })
    await withBoth.ready()
    await withBoth.delivery.worker.stop(0)
    const progress = await rewrap(withBoth.store, ring)
    t.equal(progress.deliveries, 1, 'the queued delivery was re-encrypted')
    t.equal((await rewrap(withBoth.store, ring)).deliveries, 0, 'a rerun has nothing left to do')
    await withBoth.close()

    fake.fallback = undefined
    const onlyNew = await buildApp(loadConfig({ ...QUEUED_ENV, DATABASE_URL: kind === 'sqlite' ? `sqlite:${(config.database as { path: string }).path}` : (config.database as { url: string }).url, ENCRYPTION_KEYS: newKey, ADMIN_TOKEN, LOG_LEVEL: 'silent', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0', RATE_LIMIT_MAX: '0', SEGMENT_API_URL: fake.url }), { logStream: logCapture().stream })
    t.teardown(async () => { await onlyNew.close() })
    await onlyNew.ready()
    await waitForState(onlyNew, workspace.auth, connectionId, id, 'delivered')
    t.ok(fake.requests.some((r) => r.rawBody.includes('"event":"rewrapped"') && r.headers.authorization !== undefined))
  })

  t.test(`${kind}: a store that cannot commit answers 503 store_unavailable and queues nothing`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, config, connectionId, workspace, send } = await setupQueued(t, kind, { DATABASE_TIMEOUT_MS: '300' })
    let release: () => Promise<void>
    if (config.database.kind === 'sqlite') {
      // Another writer holds SQLite's one write lock longer than busy_timeout.
      const other = new Database(config.database.path)
      other.pragma('busy_timeout = 0')
      other.exec('BEGIN IMMEDIATE')
      release = async () => { other.exec('ROLLBACK'); other.close() }
    } else {
      const other = new pg.Client({ connectionString: config.database.url })
      await other.connect()
      await other.query('BEGIN')
      await other.query('LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE')
      release = async () => { await other.query('ROLLBACK'); await other.end() }
    }
    const response = await send('track-event', { userId: 'u', event: 'lost?' }, { headers: respondAsync })
    await release()
    t.equal(response.statusCode, 503)
    t.match(response.json(), { code: 'store_unavailable' })
    const list = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries`, headers: workspace.auth })
    t.same(list.json(), { deliveries: [] }, 'nothing was queued')
  })

  t.test(`${kind}: a 429 paces that Write Key only`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind, { DELIVERY_BACKOFF_MAX_MS: '60000' })
    const other = (await createConnection(app, workspace, { name: 'Client B', writeKey: 'wk_other_client_0001' })).id
    const limited = basicAuth('wk_e2e_7Qz9VfK2mXr4LpT8')
    // Segment limits the first Write Key for a long time; the other one is fine.
    fake.fallback = (request) => request.headers.authorization === limited ? { status: 429, headers: { 'retry-after': '30' } } : { status: 200 }
    const first = (await send('track-event', { userId: 'u', event: 'limited 1' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitFor('the 429', () => fake.requests.length >= 1 ? true : undefined)
    const paced = await waitFor('the retry to be scheduled', async () => {
      const body = (await getDelivery(app, workspace.auth, connectionId, first)).json<{ upstreamStatus?: number, nextAttemptAt?: string }>()
      return body.upstreamStatus === 429 ? body : undefined
    })
    t.ok(Date.parse(paced.nextAttemptAt!) - Date.now() > 10_000, 'Retry-After is honoured')
    const second = (await send('track-event', { userId: 'u', event: 'limited 2' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    const others: string[] = []
    for (let i = 0; i < 3; i++) others.push((await send('track-event', { userId: 'u', event: `other ${i}` }, { headers: respondAsync, connectionId: other })).json<{ deliveryId: string }>().deliveryId)
    for (const id of others) await waitForState(app, workspace.auth, other, id, 'delivered')
    t.equal(fake.requests.filter((r) => r.headers.authorization === limited).length, 1, 'no second request with the limited Write Key')
    t.match((await getDelivery(app, workspace.auth, connectionId, second)).json(), { state: 'queued', attempts: 0 }, 'new events of the paced Write Key wait too')
  })
}

for (const kind of STORES) {
  t.test(`${kind}: retention purge removes delivered records only`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    const delivered = (await send('track-event', { userId: 'u', event: 'done' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitForState(app, workspace.auth, connectionId, delivered, 'delivered')
    fake.fallback = { status: 400 }
    const failed = (await send('track-event', { userId: 'u', event: 'refused' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitForState(app, workspace.auth, connectionId, failed, 'failed')
    t.equal(await app.store.queue.purgeDelivered(Date.now() - 3_600_000), 0, 'a record younger than the retention stays')
    t.equal(await app.store.queue.purgeDelivered(Date.now() + 1), 1)
    t.equal((await getDelivery(app, workspace.auth, connectionId, delivered)).statusCode, 404)
    t.equal((await getDelivery(app, workspace.auth, connectionId, failed)).statusCode, 200, 'dead letters are kept until retried or discarded')
  })
}

t.test('Prefer: respond-async is read as RFC 7240 says', async (t) => {
  const { prefersAsync } = await import('../src/routes/deliveries.js')
  t.ok(prefersAsync('respond-async'))
  t.ok(prefersAsync('Respond-Async'))
  t.ok(prefersAsync('wait=10, respond-async'))
  t.ok(prefersAsync(['return=minimal', 'respond-async; foo=bar']))
  t.notOk(prefersAsync(undefined))
  t.notOk(prefersAsync('return=minimal'))
  t.notOk(prefersAsync('respond-asynchronously'))
  t.notOk(prefersAsync('handling=respond-async'))
})
