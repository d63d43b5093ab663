// Queued delivery (Prefer: respond-async) end to end, on SQLite and on PostgreSQL: accept, the
// worker's delivery through a fake Segment, outages, dead letters and replay, the deliveries
// routes, the delete guard, queue_full, rotation and what is (not) in the database.
import { readFileSync, existsSync } from 'node:fs'
import t from 'tap'
import pg from 'pg'
import { basicAuth, ISO, GENERATED_ID, WRITE_KEY } from './support/actions.js'
import { batchMessageIds, getDelivery, respondAsync, setupQueued, STORES, waitFor, waitForState } from './support/queued.js'
import { createConnection, createWorkspace } from './helper.js'
import { postgresSkip } from './support/postgres.js'

for (const kind of STORES) {
  t.test(`${kind}: accept, 202, deliver`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send, logs } = await setupQueued(t, kind)
    const response = await send('track-event', { userId: 'u1', event: 'Order Completed', properties: { total: 42 } }, { headers: respondAsync })
    t.equal(response.statusCode, 202)
    const body = response.json<{ status: string, action: string, messageId: string, bytes: number, deliveryId: string }>()
    t.match(body, { status: 'queued', action: 'track-event', messageId: GENERATED_ID, deliveryId: /^dlv_/ })
    t.type(body.bytes, 'number')
    t.equal(response.headers['preference-applied'], 'respond-async')
    t.equal(response.headers.location, `/v1/connections/${connectionId}/deliveries/${body.deliveryId}`)

    const delivered = await waitForState(app, workspace.auth, connectionId, body.deliveryId, 'delivered')
    t.match(delivered, { id: body.deliveryId, action: 'track-event', events: 1, messageIds: [body.messageId], bytes: body.bytes, attempts: 1, upstreamStatus: 200, deliveredAt: ISO, createdAt: ISO })
    t.notOk('nextAttemptAt' in delivered)
    t.equal(fake.requests.length, 1)
    const request = fake.requests[0]!
    t.equal(request.url, '/v1/batch')
    t.equal(request.headers.authorization, basicAuth(WRITE_KEY))
    const sent = request.body as { batch: Array<Record<string, unknown>>, sentAt: string }
    t.match(sent.sentAt, ISO)
    t.match(sent.batch, [{ type: 'track', userId: 'u1', event: 'Order Completed', properties: { total: 42 }, messageId: body.messageId, context: { library: { name: 'segment-forwarder' } } }])
    t.equal(sent.batch[0]!.timestamp, delivered.createdAt, 'an event without timestamp gets its acceptance time')
    t.same(await app.store.queue.listSealedEvents('', 10), [], 'a delivered delivery\'s events are deleted')
    const line = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'delivery attempt')
    t.match(line, { connectionId, events: 1, upstreamStatus: 200, attempt: 1, bytes: Number, durationMs: Number })
    t.notOk(logs.some((l) => l.includes('Order Completed')), 'no event data in the log')
  })

  t.test(`${kind}: batch-send, a given timestamp kept, context merged into the items`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    const response = await send('batch-send', {
      context: { ip: '10.0.0.1' },
      batch: [
        { type: 'track', userId: 'u', event: 'A', timestamp: '2026-01-02T03:04:05.000Z' },
        { type: 'identify', userId: 'u', messageId: 'mine-1', context: { ip: '10.9.9.9' } }
      ]
    }, { headers: respondAsync })
    t.equal(response.statusCode, 202)
    const body = response.json<{ messageIds: string[], count: number, deliveryId: string }>()
    t.equal(body.count, 2)
    t.equal(body.messageIds[1], 'mine-1')
    await waitForState(app, workspace.auth, connectionId, body.deliveryId, 'delivered')
    const items = (fake.requests[0]!.body as { batch: Array<Record<string, unknown>>, context?: unknown }).batch
    t.equal(items[0]!.timestamp, '2026-01-02T03:04:05.000Z')
    t.match(items[0], { type: 'track', context: { ip: '10.0.0.1' } })
    t.match(items[1], { type: 'identify', messageId: 'mine-1', context: { ip: '10.9.9.9' } })
    t.same(batchMessageIds(fake.requests[0]!), body.messageIds)
  })

  t.test(`${kind}: dryRun wins, bad input and oversize answer as sync, nothing queued`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    const dry = await send('track-event', { userId: 'u', event: 'e' }, { headers: respondAsync, query: 'dryRun=true' })
    t.equal(dry.statusCode, 200)
    t.equal(dry.json<{ status: string }>().status, 'validated')
    t.equal((await send('track-event', { userId: 'u' }, { headers: respondAsync })).statusCode, 400)
    t.equal((await send('track-event', { userId: 'u', event: 'e', properties: { big: 'x'.repeat(40_000) } }, { headers: respondAsync })).statusCode, 413)
    const list = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries`, headers: workspace.auth })
    t.same(list.json(), { deliveries: [] })
    t.equal(fake.requests.length, 0)
  })

  t.test(`${kind}: an outage, then every queued event delivered, joined into batches`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 503 }
    const accepted: Array<{ deliveryId: string, messageId: string }> = []
    for (let i = 0; i < 30; i++) {
      const response = await send('track-event', { userId: `u${i}`, event: 'During Outage' }, { headers: respondAsync })
      t.equal(response.statusCode, 202)
      accepted.push(response.json())
    }
    await waitFor('several failed attempts', () => fake.requests.length >= 3 ? true : undefined)
    const queued = await getDelivery(app, workspace.auth, connectionId, accepted[0]!.deliveryId)
    t.match(queued.json(), { state: 'queued', upstreamStatus: 503, nextAttemptAt: ISO })
    const outageEnd = fake.requests.length
    fake.fallback = undefined
    const after = fake.requests.length
    for (const { deliveryId } of accepted) await waitForState(app, workspace.auth, connectionId, deliveryId, 'delivered')
    const deliveredIds = new Set(fake.requests.slice(Math.min(outageEnd, after)).flatMap(batchMessageIds))
    for (const { messageId } of accepted) t.ok(deliveredIds.has(messageId), `${messageId} reached Segment after the outage`)
    t.ok(fake.requests.slice(outageEnd).length < accepted.length, 'the queued events shared upstream requests')
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
    t.match(metrics, /segment_forwarder_deliveries_total\{outcome="delivered"\} 30/)
    t.match(metrics, /segment_forwarder_deliveries_total\{outcome="retried"\} [1-9]/)
    t.match(metrics, /segment_forwarder_queue_events\{state="queued"\} 0/)
    t.match(metrics, /segment_forwarder_queue_oldest_age_seconds 0/)
  })

  t.test(`${kind}: refused -> failed (dead letter); retry one, retry all; discard`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 400, body: 'bad event' }
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await send('track-event', { userId: 'u', event: `e${i}` }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId)
    for (const id of ids) {
      const failed = await waitForState(app, workspace.auth, connectionId, id, 'failed')
      t.match(failed, { upstreamStatus: 400, error: /400/ })
    }
    const failedList = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries?state=failed`, headers: workspace.auth })
    t.equal(failedList.json<{ deliveries: unknown[] }>().deliveries.length, 3)
    fake.fallback = undefined

    const retried = await app.inject({ method: 'POST', url: `/v1/connections/${connectionId}/deliveries/${ids[0]}/retry`, headers: workspace.auth })
    t.equal(retried.statusCode, 202)
    t.match(retried.json(), { id: ids[0], state: 'queued' })
    await waitForState(app, workspace.auth, connectionId, ids[0]!, 'delivered')
    const again = await app.inject({ method: 'POST', url: `/v1/connections/${connectionId}/deliveries/${ids[0]}/retry`, headers: workspace.auth })
    t.equal(again.statusCode, 404, 'a delivered delivery is not retried')

    const discarded = await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}/deliveries/${ids[1]}`, headers: workspace.auth })
    t.equal(discarded.statusCode, 204)
    t.equal((await getDelivery(app, workspace.auth, connectionId, ids[1]!)).json<{ code: string }>().code, 'delivery_not_found')
    t.equal((await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}/deliveries/${ids[0]}`, headers: workspace.auth })).statusCode, 404, 'a delivered delivery cannot be discarded')

    const all = await app.inject({ method: 'POST', url: `/v1/connections/${connectionId}/deliveries/retry`, headers: workspace.auth })
    t.equal(all.statusCode, 202)
    t.same(all.json(), { requeued: 1 })
    await waitForState(app, workspace.auth, connectionId, ids[2]!, 'delivered')
  })

  t.test(`${kind}: a refused joined request is split, so only the bad delivery fails`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 503 }
    const good = (await send('track-event', { userId: 'u', event: 'good' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    const bad = (await send('track-event', { userId: 'u', event: 'bad' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitFor('a joined attempt', () => fake.requests.some((r) => batchMessageIds(r).length === 2) ? true : undefined)
    // From now on Segment refuses any request that carries the "bad" event, and takes the rest.
    fake.fallback = (request) => request.rawBody.includes('"event":"bad"') ? { status: 400, body: 'bad' } : { status: 200 }
    const failed = await waitForState(app, workspace.auth, connectionId, bad, 'failed')
    t.match(failed, { upstreamStatus: 400 })
    await waitForState(app, workspace.auth, connectionId, good, 'delivered')
    const goodAlone = fake.requests.find((r) => r.rawBody.includes('"event":"good"') && !r.rawBody.includes('"event":"bad"'))
    t.ok(goodAlone, 'the good event went without the bad one')
  })

  t.test(`${kind}: max age -> failed`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind, { DELIVERY_MAX_AGE_MS: '400' })
    fake.fallback = { status: 503 }
    const id = (await send('identify-user', { userId: 'u' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    const failed = await waitForState(app, workspace.auth, connectionId, id, 'failed')
    t.match(failed, { upstreamStatus: 503, error: /maximum age/ })
    t.ok((failed.attempts as number) >= 1)
  })

  t.test(`${kind}: list with state filter and cursor, newest first; 409 deliveries_pending`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 503 }
    const ids: string[] = []
    for (let i = 0; i < 5; i++) ids.push((await send('page-view', { anonymousId: 'a', name: `p${i}` }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId)
    const seen: string[] = []
    let cursor: string | undefined
    for (;;) {
      const page = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries?limit=2&state=queued${cursor === undefined ? '' : `&cursor=${cursor}`}`, headers: workspace.auth })
      t.equal(page.statusCode, 200)
      const body = page.json<{ deliveries: Array<{ id: string, state: string }>, nextCursor?: string }>()
      t.ok(body.deliveries.length <= 2)
      seen.push(...body.deliveries.map((d) => d.id))
      if (body.nextCursor === undefined) break
      cursor = body.nextCursor
    }
    t.same(seen, [...ids].reverse(), 'every queued delivery once, newest first')
    t.same((await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries?state=delivered`, headers: workspace.auth })).json(), { deliveries: [] })
    t.equal((await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries?cursor=nonsense`, headers: workspace.auth })).statusCode, 400)

    const blocked = await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}`, headers: workspace.auth })
    t.equal(blocked.statusCode, 409)
    t.match(blocked.json(), { code: 'deliveries_pending', pending: 5 })
    const forced = await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}?discardQueued=true`, headers: workspace.auth })
    t.equal(forced.statusCode, 204)
    t.same(await app.store.queue.listSealedEvents('', 10), [], 'the discarded events are gone')
  })

  t.test(`${kind}: queue_full refuses the whole request and queues nothing`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind, { QUEUE_MAX_EVENTS: '3' })
    fake.fallback = { status: 503 }
    const batch = { batch: [{ type: 'track', userId: 'u', event: 'a' }, { type: 'track', userId: 'u', event: 'b' }] }
    t.equal((await send('batch-send', batch, { headers: respondAsync })).statusCode, 202)
    const full = await send('batch-send', batch, { headers: respondAsync })
    t.equal(full.statusCode, 503)
    t.match(full.json(), { code: 'queue_full' })
    t.ok(Number(full.headers['retry-after']) > 0)
    const list = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries`, headers: workspace.auth })
    t.equal(list.json<{ deliveries: unknown[] }>().deliveries.length, 1)
    t.equal((await send('track-event', { userId: 'u', event: 'fits' }, { headers: respondAsync })).statusCode, 202, 'one more event still fits')
    t.equal((await send('track-event', { userId: 'u', event: 'over' }, { headers: respondAsync })).statusCode, 503)

    // Delivered events leave the count, and so do those of a connection deleted with its queue.
    fake.fallback = undefined
    await waitFor('the queue drained', async () => {
      const queued = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries?state=queued`, headers: workspace.auth })
      return queued.json<{ deliveries: unknown[] }>().deliveries.length === 0 ? true : undefined
    })
    fake.fallback = { status: 503 }
    t.equal((await send('batch-send', { batch: [...batch.batch, { type: 'track', userId: 'u', event: 'c' }] }, { headers: respondAsync })).statusCode, 202, 'room again after delivery')
    t.equal((await send('track-event', { userId: 'u', event: 'over' }, { headers: respondAsync })).statusCode, 503)
    t.equal((await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}?discardQueued=true`, headers: workspace.auth })).statusCode, 204)
    const next = (await createConnection(app, workspace, { name: 'Client B' })).id
    t.equal((await send('batch-send', { batch: [...batch.batch, { type: 'track', userId: 'u', event: 'c' }] }, { headers: respondAsync, connectionId: next })).statusCode, 202, 'room again after the connection and its queue were deleted')
  })

  t.test(`${kind}: concurrent accepts (one commit group on SQLite) respect the limit exactly`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind, { QUEUE_MAX_EVENTS: '5' })
    fake.fallback = { status: 503 }
    const answers = await Promise.all(Array.from({ length: 8 }, async (_x, i) => await send('track-event', { userId: 'u', event: `c${i}` }, { headers: respondAsync })))
    t.same(answers.map((a) => a.statusCode).sort(), [202, 202, 202, 202, 202, 503, 503, 503])
    const list = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries`, headers: workspace.auth })
    const ids = list.json<{ deliveries: Array<{ id: string }> }>().deliveries.map((d) => d.id).sort()
    t.same(ids, answers.filter((a) => a.statusCode === 202).map((a) => a.json<{ deliveryId: string }>().deliveryId).sort(), 'exactly the 202\'d ones are queued')
  })

  t.test(`${kind}: a rotation applies to queued events`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 503 }
    const id = (await send('track-event', { userId: 'u', event: 'e' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitFor('a failed attempt', () => fake.requests.length >= 1 ? true : undefined)
    const rotated = await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/write-key`, headers: workspace.auth, payload: { writeKey: 'wk_rotated_NEW_0001' } })
    t.equal(rotated.statusCode, 200)
    const from = fake.requests.length
    fake.fallback = undefined
    await waitForState(app, workspace.auth, connectionId, id, 'delivered')
    const last = fake.requests[fake.requests.length - 1]!
    t.ok(fake.requests.length > from)
    t.equal(last.headers.authorization, basicAuth('wk_rotated_NEW_0001'))
  })

  t.test(`${kind}: tenant isolation of every deliveries route`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const { app, fake, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 400 }
    const id = (await send('track-event', { userId: 'u', event: 'e' }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    await waitForState(app, workspace.auth, connectionId, id, 'failed')
    const other = await createWorkspace(app, 'Other Agency')
    const otherConnection = (await createConnection(app, other)).id
    const sibling = (await createConnection(app, workspace, { name: 'Client B' })).id
    const routes = (con: string, dlv: string): Array<{ method: 'GET' | 'POST' | 'DELETE', url: string }> => [
      { method: 'GET', url: `/v1/connections/${con}/deliveries/${dlv}` },
      { method: 'GET', url: `/v1/connections/${con}/deliveries` },
      { method: 'POST', url: `/v1/connections/${con}/deliveries/${dlv}/retry` },
      { method: 'POST', url: `/v1/connections/${con}/deliveries/retry` },
      { method: 'DELETE', url: `/v1/connections/${con}/deliveries/${dlv}` }
    ]
    for (const route of routes(connectionId, id)) {
      const foreign = await app.inject({ ...route, headers: other.auth })
      t.equal(foreign.statusCode, 404, `${route.method} ${route.url} as another workspace`)
      t.equal(foreign.json<{ code: string }>().code, 'connection_not_found')
      const never = await app.inject({ ...route, url: route.url.replace(connectionId, 'con_0000000000000000000000'), headers: workspace.auth })
      t.equal(foreign.body, never.body, 'exactly as a connection that never existed')
    }
    for (const route of routes(sibling, id).filter((r) => r.url.includes(id))) {
      const response = await app.inject({ ...route, headers: workspace.auth })
      t.equal(response.statusCode, 404, `${route.method} through another connection of the workspace`)
      t.equal(response.json<{ code: string }>().code, 'delivery_not_found')
    }
    t.equal((await app.inject({ method: 'POST', url: `/v1/connections/${otherConnection}/deliveries/retry`, headers: other.auth })).json<{ requeued: number }>().requeued, 0)
    const still = await getDelivery(app, workspace.auth, connectionId, id)
    t.match(still.json(), { state: 'failed' }, 'untouched')
    t.equal((await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries/${id}` })).statusCode, 401)
  })

  t.test(`${kind}: planted event values are absent from the database while queued`, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const PLANTED = 'PLANTED-7c1e9a-secret-value'
    const { app, fake, config, connectionId, workspace, send } = await setupQueued(t, kind)
    fake.fallback = { status: 503 }
    const id = (await send('track-event', { userId: PLANTED + '-user', event: PLANTED + '-event', properties: { p: PLANTED } }, { headers: respondAsync })).json<{ deliveryId: string }>().deliveryId
    t.match((await getDelivery(app, workspace.auth, connectionId, id)).json(), { state: 'queued' })
    if (config.database.kind === 'sqlite') {
      const path = config.database.path
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        if (!existsSync(file)) continue
        const bytes = readFileSync(file)
        t.equal(bytes.indexOf(PLANTED), -1, `${file} does not hold the event`)
        t.equal(bytes.indexOf(Buffer.from(PLANTED, 'utf16le')), -1)
      }
    } else {
      const client = new pg.Client({ connectionString: config.database.url })
      await client.connect()
      t.teardown(async () => { await client.end() })
      await client.query('CHECKPOINT')
      const { rows } = await client.query<{ path: string }>("SELECT pg_relation_filepath(c.oid) AS path FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 't', 'i') AND pg_relation_filepath(c.oid) IS NOT NULL")
      let read = 0
      for (const { path } of rows) {
        const { rows: [file] } = await client.query<{ data: Buffer | null }>('SELECT pg_read_binary_file($1, 0, 100000000, true) AS data', [path])
        if (file?.data == null) continue
        read++
        t.equal(file.data.indexOf(PLANTED), -1, `${path} does not hold the event`)
      }
      t.ok(read >= 2, 'the tables\' files were read')
      const dump = await client.query<{ text: string }>("SELECT (SELECT string_agg(d::text, '|') FROM deliveries d) || (SELECT string_agg(encode(sealed, 'escape'), '|') FROM delivery_events) AS text")
      t.equal(dump.rows[0]!.text.indexOf(PLANTED), -1, 'no row holds it as text')
    }
  })
}

t.test('an event that fits a sync call but not a batch item once typed and timestamped is 413 when queued', async (t) => {
  const { app, fake, connectionId, workspace, send } = await setupQueued(t, 'sqlite', { SEGMENT_MAX_EVENT_BYTES: '1000' })
  // Grow the event until the sync call's own measure is just under the limit.
  let pad = 700
  for (;;) {
    const dry = await send('track-event', { userId: 'u', event: 'e', properties: { pad: 'x'.repeat(pad) } }, { query: 'dryRun=true' })
    const bytes = dry.json<{ bytes: number }>().bytes
    if (bytes >= 990) break
    pad += 990 - bytes
  }
  const body = { userId: 'u', event: 'e', properties: { pad: 'x'.repeat(pad) } }
  t.equal((await send('track-event', body, { query: 'dryRun=true' })).statusCode, 200, 'a sync call would be sent')
  const queued = await send('track-event', body, { headers: respondAsync })
  t.equal(queued.statusCode, 413)
  t.match(queued.json(), { code: 'payload_too_large', limit: 1000 })
  t.same((await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries`, headers: workspace.auth })).json(), { deliveries: [] })
  t.equal(fake.requests.length, 0)
})
