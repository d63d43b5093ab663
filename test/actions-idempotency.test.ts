// Idempotency-Key end to end (design/api.md, Actions), on both stores: derived messageIds, the
// remembered answer and its replay, 422 for another body, 409 while running, errors forgotten,
// expiry and purge, crashed replicas' leases, tenant isolation, and nothing readable stored.
import { randomBytes } from 'node:crypto'
import Database from 'better-sqlite3'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { AppDeps } from '../src/app.js'
import type { Config } from '../src/config.js'
import { build, createConnection, createWorkspace } from './helper.js'
import { callAction, fakeSegment, GENERATED_ID, setupActions, WRITE_KEY, withoutSentAt, type ActionsSetup } from './support/actions.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'
import { upstreamGate } from './support/upstream-gate.js'

const event = { userId: 'u1', event: 'Order Completed', properties: { total: 12.5, label: 'café 🎉' } }
const items = [
  { type: 'track', userId: 'u1', event: 'A' },
  { type: 'identify', userId: 'u1', traits: { plan: 'pro' } },
  { type: 'page', anonymousId: 'a1', name: 'Home' },
  { type: 'alias', previousId: 'a1', userId: 'u1' }
]
const key = (value: string) => ({ 'idempotency-key': value })
const DAY_MS = 24 * 60 * 60 * 1000

type Kind = 'sqlite' | 'postgres'

/** The environment that puts the app on `kind`: its own SQLite file (the default), or a fresh PostgreSQL database. */
async function storeEnv (t: Test, kind: Kind): Promise<Record<string, string>> {
  if (kind === 'sqlite') return {}
  return { DATABASE_URL: await freshPostgresUrl(t), ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}` }
}

/** Runs SQL on the app's own database, as an operator would look at it. */
async function sql (t: Test, config: Config, text: string): Promise<Array<Record<string, unknown>>> {
  if (config.database.kind === 'sqlite') {
    const db = new Database(config.database.path)
    try {
      const statement = db.prepare(text)
      return statement.reader ? statement.all() as Array<Record<string, unknown>> : (statement.run(), [])
    } finally {
      db.close()
    }
  }
  const client = new pg.Client({ connectionString: config.database.url })
  client.on('error', () => {})
  await client.connect()
  try {
    return (await client.query(text)).rows
  } finally {
    await client.end()
  }
}

/** setupActions with app dependencies (an upstream gate). */
async function setupWith (t: Test, env: Record<string, string>, deps: AppDeps): Promise<ActionsSetup> {
  const fake = await fakeSegment(t)
  const { app, config, logs } = await build(t, { SEGMENT_API_URL: fake.url, ...env }, deps)
  const workspace = await createWorkspace(app)
  const { id: connectionId } = await createConnection(app, workspace, { writeKey: WRITE_KEY })
  return {
    app,
    config,
    logs,
    fake,
    workspace,
    connectionId,
    send: async (action, payload, options = {}) => {
      const { connectionId: id = connectionId, workspace: as = workspace, ...rest } = options
      return await callAction(app, as, id, action, payload, rest)
    }
  }
}

for (const kind of ['sqlite', 'postgres'] as const) {
  t.test(kind, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const setup = async (t: Test, env: Record<string, string> = {}, deps: AppDeps = {}): Promise<ActionsSetup> =>
      await setupWith(t, { ...await storeEnv(t, kind), ...env }, deps)

    t.test('the same key and body: the first answer again, with Idempotent-Replayed, and nothing sent twice', async (t) => {
      const { fake, send } = await setup(t)
      const first = await send('track-event', event, { headers: key('run-8812-step-3') })
      t.equal(first.statusCode, 200)
      t.equal(first.headers['idempotent-replayed'], undefined, 'only replays carry the header')
      t.match(first.json().messageId, GENERATED_ID)
      t.equal((fake.requests[0]!.body as { messageId: string }).messageId, first.json().messageId)

      const second = await send('track-event', event, { headers: key('run-8812-step-3') })
      t.equal(second.statusCode, 200)
      t.equal(second.headers['idempotent-replayed'], 'true')
      t.same(second.json(), first.json(), 'the same answer: messageId, bytes, attempts, upstreamStatus')
      t.equal(fake.requests.length, 1, 'nothing sent again')

      // The same JSON: other whitespace, other key order, another sentAt (replaced by ours anyway).
      const reordered = '{ "properties": {"label": "café 🎉", "total": 12.5},\n  "event": "Order Completed", "userId": "u1", "sentAt": "2024-01-01T00:00:00.000Z" }'
      const third = await send('track-event', reordered, { headers: key('run-8812-step-3') })
      t.equal(third.statusCode, 200)
      t.equal(third.headers['idempotent-replayed'], 'true', 'the same JSON matches')
      t.same(third.json(), first.json())
      t.equal(fake.requests.length, 1)

      const other = await send('track-event', event, { headers: key('run-8812-step-4') })
      t.equal(other.headers['idempotent-replayed'], undefined, 'another key is another request')
      t.not(other.json().messageId, first.json().messageId, 'another key, another id')
      t.equal(fake.requests.length, 2)
    })

    t.test('batch-send: the replay carries the same messageIds in item order', async (t) => {
      const { fake, send } = await setup(t)
      const withSentAt = items.map((item, i) => ({ ...item, sentAt: `2024-01-0${i + 1}T00:00:00.000Z` }))
      const first = await send('batch-send', { batch: withSentAt, context: { locale: 'fr-FR' } }, { headers: key('k-batch') })
      t.equal(first.statusCode, 200)
      const ids = first.json().messageIds as string[]
      t.equal(new Set(ids).size, 4, 'one id per item')
      for (const id of ids) t.match(id, GENERATED_ID)
      t.same((fake.requests[0]!.body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId), ids, 'item i carries id i upstream')

      const second = await send('batch-send', { context: { locale: 'fr-FR' }, batch: items }, { headers: key('k-batch') })
      t.equal(second.headers['idempotent-replayed'], 'true', 'the items\' sentAt do not count')
      t.same(second.json(), first.json())
      t.equal(fake.requests.length, 1)

      // Each item's id depends on its index, not on the batch size or its neighbours (a dry run
      // is not remembered, so it may use the key with another body).
      const longer = await send('batch-send', { batch: [...items, { type: 'screen', userId: 'u1', name: 'S' }] }, { headers: key('k-batch'), query: 'dryRun=true' })
      t.equal(longer.statusCode, 200)
      t.same((longer.json().messageIds as string[]).slice(0, 4), ids, 'a longer batch with the key: the first items keep their ids')
    })

    t.test('the same key with another body is 422 idempotency_key_reused, and nothing is sent', async (t) => {
      const { fake, send } = await setup(t)
      t.equal((await send('track-event', event, { headers: key('k-422') })).statusCode, 200)
      const reused = await send('track-event', { ...event, event: 'Order Refunded' }, { headers: key('k-422') })
      t.equal(reused.statusCode, 422)
      t.equal(reused.headers['content-type'], 'application/problem+json; charset=utf-8')
      t.match(reused.json(), { status: 422, code: 'idempotency_key_reused', title: String, detail: String })
      t.equal(reused.headers['idempotent-replayed'], undefined)
      t.equal(fake.requests.length, 1, 'nothing sent for the other body')
      t.equal((await send('track-event', event, { headers: key('k-422') })).headers['idempotent-replayed'], 'true', 'the original body still replays')
    })

    t.test('the same key while the first request runs is 409 idempotency_key_in_use', async (t) => {
      const gate = upstreamGate()
      const { fake, send } = await setup(t, {}, { dispatcher: gate.dispatcher })
      const first = send('track-event', event, { headers: key('k-409') })
      await gate.arrived(1)
      for (const body of [event, { ...event, event: 'Other' }]) {
        const during = await send('track-event', body, { headers: key('k-409') })
        if (body === event) {
          t.equal(during.statusCode, 409)
          t.match(during.json(), { status: 409, code: 'idempotency_key_in_use' })
          t.equal(during.headers['retry-after'], '1')
        } else {
          t.equal(during.statusCode, 422, 'another body is 422, running or not')
        }
      }
      t.equal(fake.requests.length, 0, 'nothing more reached Segment')
      gate.open()
      const answered = await first
      t.equal(answered.statusCode, 200)
      const after = await send('track-event', event, { headers: key('k-409') })
      t.equal(after.headers['idempotent-replayed'], 'true')
      t.same(after.json(), answered.json())
      t.equal(fake.requests.length, 1, 'sent once')
    })

    t.test('a request that ended in an error is not remembered: a retry with the key sends the same messageIds', async (t) => {
      const { fake, send } = await setup(t, { SEGMENT_MAX_ATTEMPTS: '1' })
      fake.respondWith([{ status: 500 }, { status: 400, body: 'bad' }])
      const failed = await send('track-event', event, { headers: key('k-retry') })
      t.equal(failed.statusCode, 503)
      t.match(failed.json(), { code: 'segment_unavailable', messageId: GENERATED_ID })
      const rejected = await send('track-event', event, { headers: key('k-retry') })
      t.equal(rejected.statusCode, 502, 'sent again, not 409 nor a replay')
      t.equal(rejected.json().messageId, failed.json().messageId)
      const ok = await send('track-event', event, { headers: key('k-retry') })
      t.equal(ok.statusCode, 200)
      t.equal(ok.headers['idempotent-replayed'], undefined)
      t.equal(ok.json().messageId, failed.json().messageId, 'the same messageId on every try')
      t.same(fake.requests.map((r) => withoutSentAt(r.body)), [0, 1, 2].map(() => withoutSentAt(fake.requests[0]!.body)), 'the same event each time')

      // A failed request with another body is not remembered either: its body binds nothing.
      fake.respondWith([{ status: 500 }])
      t.equal((await send('track-event', event, { headers: key('k-free') })).statusCode, 503)
      t.equal((await send('track-event', { ...event, event: 'Else' }, { headers: key('k-free') })).statusCode, 200)
      t.equal((await send('track-event', event, { headers: key('k-retry') })).headers['idempotent-replayed'], 'true', 'the success is remembered')
    })

    t.test('the same key in another workspace, connection or action is independent', async (t) => {
      const { app, fake, workspace, send } = await setup(t)
      const headers = key('shared-key')
      const base = await send('track-event', event, { headers })
      const sibling = await createConnection(app, workspace, { name: 'Client B', writeKey: 'wk_second_connection_01' })
      const otherWorkspace = await createWorkspace(app, 'Other Agency')
      const theirs = await createConnection(app, otherWorkspace, { writeKey: 'wk_other_workspace_0001' })

      // Other bodies too: in another scope the key binds nothing, so neither a replay nor a 422.
      const others = [
        await send('track-event', { ...event, event: 'Other body' }, { headers, connectionId: sibling.id }),
        await send('track-event', { ...event, event: 'Their body' }, { headers, workspace: otherWorkspace, connectionId: theirs.id }),
        await send('identify-user', { userId: 'u1' }, { headers }),
        await send('batch-send', { batch: [{ type: 'track', ...event }] }, { headers })
      ]
      for (const answer of others) {
        t.equal(answer.statusCode, 200)
        t.equal(answer.headers['idempotent-replayed'], undefined, 'sent, not replayed')
      }
      t.equal(fake.requests.length, 5, 'each was sent')
      const ids = [base.json().messageId, ...others.slice(0, 3).map((a) => a.json().messageId), others[3]!.json().messageIds[0]]
      t.equal(new Set(ids).size, 5, 'and got its own messageId')
      for (const id of ids) t.match(id, GENERATED_ID)
      const again = await send('track-event', event, { headers })
      t.equal(again.headers['idempotent-replayed'], 'true', 'the original is still remembered')
      t.equal(again.json().messageId, base.json().messageId)
      const theirsAgain = await send('track-event', { ...event, event: 'Their body' }, { headers, workspace: otherWorkspace, connectionId: theirs.id })
      t.equal(theirsAgain.headers['idempotent-replayed'], 'true', 'and so is theirs, with its own body')
      t.equal(theirsAgain.json().messageId, others[1]!.json().messageId)
    })

    t.test('a remembered key expires after 24 hours; expired rows are purged', async (t) => {
      const { config, fake, send } = await setup(t)
      const first = await send('track-event', event, { headers: key('k-old') })
      const [row] = await sql(t, config, 'SELECT expires_at FROM idempotency_keys')
      const expiresIn = Number(row!.expires_at) - Date.now()
      t.ok(expiresIn > DAY_MS - 60_000 && expiresIn <= DAY_MS, 'remembered for 24 hours')

      // A day passes.
      await sql(t, config, `UPDATE idempotency_keys SET expires_at = expires_at - ${DAY_MS}`)
      const again = await send('track-event', event, { headers: key('k-old') })
      t.equal(again.statusCode, 200)
      t.equal(again.headers['idempotent-replayed'], undefined, 'forgotten: sent again')
      t.equal(again.json().messageId, first.json().messageId, 'with the same derived messageId, which Segment drops if it still has it')
      t.equal(fake.requests.length, 2)
      t.equal((await send('track-event', event, { headers: key('k-old') })).headers['idempotent-replayed'], 'true', 'and remembered anew')
    })

    t.test('the first keyed request of a replica purges expired keys, in bounded batches', async (t) => {
      const first = await setup(t)
      for (let i = 0; i < 3; i++) t.equal((await first.send('track-event', event, { headers: key(`k-purge-${i}`) })).statusCode, 200)
      await first.app.close()
      await sql(t, first.config, `UPDATE idempotency_keys SET expires_at = expires_at - ${DAY_MS} WHERE key_hash <> (SELECT max(key_hash) FROM idempotency_keys)`)
      t.equal((await sql(t, first.config, 'SELECT key_hash FROM idempotency_keys')).length, 3)

      // A new replica on the same database: its first keyed request purges (another key: no takeover).
      const env: Record<string, string> = first.config.database.kind === 'sqlite'
        ? { DATABASE_URL: `sqlite:${first.config.database.path}` }
        : { DATABASE_URL: first.config.database.url, ENCRYPTION_KEYS: storeEnvKeys(first.config) }
      // A subtest: its own test folder, as build() asks for one (the database is named by env).
      await t.test('a new replica on the same database', async (t) => {
        const replica = await setupActions(t, env)
        t.equal((await replica.send('track-event', event, { headers: key('k-purge-new') })).statusCode, 200)
        t.equal((await sql(t, first.config, 'SELECT key_hash FROM idempotency_keys')).length, 2, 'the two expired rows are gone; the live one and the new one stay')
      })
    })

    t.test('a key left running by a replica that died is free once its lease has run out', async (t) => {
      const gate = upstreamGate()
      // Two replicas in one process: without coalescing, so the second request is not held in the
      // first one's lane (replicas never share lanes).
      const { config, fake, logs, send } = await setup(t, { COALESCE: 'off' }, { dispatcher: gate.dispatcher })
      const stuck = send('track-event', event, { headers: key('k-crash') })
      await gate.arrived(1)
      const [row] = await sql(t, config, 'SELECT state, expires_at FROM idempotency_keys')
      t.equal(row!.state, 'running')
      const leaseMs = Number(row!.expires_at) - Date.now()
      t.ok(leaseMs > config.segment.deadlineMs && leaseMs <= config.segment.deadlineMs + 60_000, 'the lease outlasts the upstream deadline, briefly')
      t.equal((await send('track-event', event, { headers: key('k-crash') })).statusCode, 409, 'held while the lease runs')

      // As if its replica died long ago: the lease has run out.
      await sql(t, config, `UPDATE idempotency_keys SET expires_at = ${Date.now() - 1}`)
      const taking = send('track-event', event, { headers: key('k-crash') })
      await gate.arrived(2)
      gate.open()
      const taken = await taking
      t.equal(taken.statusCode, 200, 'taken over and sent')
      t.equal(taken.headers['idempotent-replayed'], undefined)
      const late = await stuck
      t.equal(late.statusCode, 200, 'the old request still answers its caller')
      t.equal(late.json().messageId, taken.json().messageId, 'with the same messageId: Segment dedupes the pair')
      const warning = logs.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => String(line.msg).includes('lease ran out'))
      t.match(warning, { level: 40, reqId: String }, 'the late request says its answer is not remembered, in its own request\'s log')
      t.equal(fake.requests.length, 2)
      const replay = await send('track-event', event, { headers: key('k-crash') })
      t.equal(replay.headers['idempotent-replayed'], 'true')
      t.equal(fake.requests.length, 2)
    })

    t.test('the rows hold neither the key, nor the body, nor ids in plaintext', async (t) => {
      const { config, send } = await setup(t)
      const secretKey = 'run-4242-step-SECRETKEY'
      const body = { userId: 'alice@example.com', event: 'Plan Upgraded', messageId: 'caller-msg-PLAINTEXT', properties: { card: '4111111111111111' } }
      t.equal((await send('track-event', body, { headers: key(secretKey) })).statusCode, 200)
      t.equal((await send('batch-send', { batch: [{ type: 'identify', userId: 'bob@example.com', traits: { ssn: '078-05-1120' } }] }, { headers: key(secretKey) })).statusCode, 200)
      const rows = await sql(t, config, 'SELECT * FROM idempotency_keys')
      t.equal(rows.length, 2)
      const text = JSON.stringify(rows)
      for (const value of [secretKey, 'alice@example.com', 'Plan Upgraded', 'caller-msg-PLAINTEXT', '4111111111111111', 'bob@example.com', '078-05-1120', 'sfw-']) {
        t.notOk(text.includes(value), `no ${value} in the rows`)
      }
      for (const row of rows) t.match(JSON.parse(row.answer as string), { bytes: Number, attempts: 1, upstreamStatus: 200 })
    })
  })
}

/** The ENCRYPTION_KEYS a config was loaded from, back in their variable's form. */
function storeEnvKeys (config: Config): string {
  return (config.encryptionKeys ?? []).map((k) => `${k.kid}:${k.key.toString('base64')}`).join(',')
}

t.test('without Idempotency-Key every call gets fresh random ids, and nothing is remembered', async (t) => {
  const { config, fake, send } = await setupActions(t)
  const seen = new Set<string>()
  for (let i = 0; i < 3; i++) {
    const single = await send('track-event', event)
    const batch = await send('batch-send', { batch: items })
    t.equal(single.headers['idempotent-replayed'], undefined)
    for (const id of [single.json().messageId as string, ...batch.json().messageIds as string[]]) {
      t.match(id, GENERATED_ID)
      seen.add(id)
    }
  }
  t.equal(seen.size, 3 * 5, 'no id repeats')
  t.equal(fake.requests.length, 6, 'each was sent')
  t.same(await sql(t, config, 'SELECT * FROM idempotency_keys'), [])
})

t.test('caller-given messageIds are kept, with or without a key', async (t) => {
  const { fake, send } = await setupActions(t)
  const given = { ...event, messageId: 'order-50314-completed' }
  t.equal((await send('track-event', given, { headers: key('k1') })).json().messageId, 'order-50314-completed')
  t.equal((await send('track-event', given)).json().messageId, 'order-50314-completed')
  t.equal((await send('track-event', given, { headers: key('k1') })).json().messageId, 'order-50314-completed', 'and replayed')

  const plain = (await send('batch-send', { batch: items }, { headers: key('k2'), query: 'dryRun=true' })).json().messageIds as string[]
  const mixed = items.map((item, index): Record<string, unknown> => index === 1 ? { ...item, messageId: 'caller-item-1' } : item)
  const withGiven = (await send('batch-send', { batch: mixed }, { headers: key('k2') })).json().messageIds as string[]
  t.same(withGiven, [plain[0], 'caller-item-1', plain[2], plain[3]], 'the given id is kept; the others are derived by index as before')
  t.same((fake.requests.at(-1)!.body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId), withGiven)
  t.same((await send('batch-send', { batch: mixed }, { headers: key('k2') })).json().messageIds, withGiven, 'a replay rebuilds the same ids')
})

t.test('dryRun=true sends nothing, remembers nothing, and answers what a real send with the same key would', async (t) => {
  const { fake, send } = await setupActions(t)
  const dry = await send('track-event', event, { headers: key('k-dry'), query: 'dryRun=true' })
  t.equal(dry.statusCode, 200)
  t.same(dry.json(), { status: 'validated', action: 'track-event', messageId: dry.json().messageId, bytes: dry.json().bytes, attempts: 0 }, 'validated, 0 attempts, no upstreamStatus')
  t.equal(fake.requests.length, 0, 'nothing sent')
  const real = await send('track-event', event, { headers: key('k-dry') })
  t.equal(real.headers['idempotent-replayed'], undefined, 'a dry run is not remembered')
  t.equal(real.json().messageId, dry.json().messageId, 'same messageId')
  t.equal(real.json().bytes, dry.json().bytes, 'same bytes')
  t.equal(Buffer.byteLength(fake.requests[0]!.rawBody), dry.json().bytes, 'the dry run measured the real body')
  const dryAfter = await send('track-event', event, { headers: key('k-dry'), query: 'dryRun=true' })
  t.equal(dryAfter.json().status, 'validated', 'a dry run after the real one still validates, not replays')

  const dryBatch = await send('batch-send', { batch: items, context: { locale: 'fr-FR' } }, { headers: key('k-dry'), query: 'dryRun=true' })
  t.same(dryBatch.json(), { status: 'validated', action: 'batch-send', messageIds: dryBatch.json().messageIds, count: 4, bytes: dryBatch.json().bytes, attempts: 0 })
  t.equal(fake.requests.length, 1, 'still nothing more sent')
  const realBatch = await send('batch-send', { batch: items, context: { locale: 'fr-FR' } }, { headers: key('k-dry') })
  t.same(realBatch.json().messageIds, dryBatch.json().messageIds)
  t.equal(realBatch.json().bytes, dryBatch.json().bytes)
  t.equal(Buffer.byteLength(fake.requests[1]!.rawBody), dryBatch.json().bytes)

  const notDry = await send('identify-user', { userId: 'u' }, { query: 'dryRun=false' })
  t.equal(notDry.json().status, 'accepted', 'dryRun=false sends')
  t.equal(fake.requests.length, 3)
  const invalidDry = await send('track-event', { userId: 'u' }, { query: 'dryRun=true' })
  t.equal(invalidDry.statusCode, 400, 'a dry run validates')
  const badFlag = await send('track-event', event, { query: 'dryRun=yes' })
  t.equal(badFlag.statusCode, 400, 'dryRun is true or false')
  t.equal(badFlag.json().code, 'invalid_request')
  t.equal(fake.requests.length, 3, 'nothing sent for either')
})

t.test('invalid and oversized requests with a key are not remembered', async (t) => {
  const { config, fake, send } = await setupActions(t, { SEGMENT_MAX_EVENT_BYTES: '1000' })
  t.equal((await send('track-event', { userId: 'u1' }, { headers: key('k-bad') })).statusCode, 400)
  t.equal((await send('track-event', { ...event, properties: { blob: 'x'.repeat(2000) } }, { headers: key('k-bad') })).statusCode, 413)
  t.same(await sql(t, config, 'SELECT * FROM idempotency_keys'), [])
  t.equal((await send('track-event', event, { headers: key('k-bad') })).statusCode, 200, 'the key is still free')
  t.equal(fake.requests.length, 1)
})

t.test('a replay says so in its log line, and names neither the key nor the body', async (t) => {
  const { logs, send } = await setupActions(t)
  await send('track-event', event, { headers: key('k-log-7Hq2') })
  await send('track-event', event, { headers: key('k-log-7Hq2') })
  const lines = logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.route === '/v1/connections/:connectionId/actions/track-event')
  t.equal(lines.length, 2)
  t.equal(lines[0]!.idempotentReplay, undefined)
  t.equal(lines[0]!.upstreamStatus, 200)
  t.match(lines[1], { statusCode: 200, idempotentReplay: true, events: 1 })
  t.equal(lines[1]!.upstreamStatus, undefined, 'nothing went upstream')
  t.notOk(logs.join('\n').includes('k-log-7Hq2'), 'the key is not logged')
})

t.test('deeply nested bodies with a key are never a 5xx', async (t) => {
  const { send } = await setupActions(t)
  for (const depth of [1000, 10_000]) {
    // As text: the test's own JSON.stringify would overflow.
    const body = `{"userId":"u1","event":"Deep","properties":${'{"n":'.repeat(depth)}"leaf"${'}'.repeat(depth)}}`
    const first = await send('track-event', body, { headers: key(`k-deep-${depth}`) })
    t.ok(first.statusCode < 500, `depth ${depth}: ${first.statusCode}`)
    if (first.statusCode === 200) {
      t.equal((await send('track-event', body, { headers: key(`k-deep-${depth}`) })).headers['idempotent-replayed'], 'true')
    }
  }
})

t.test('an Idempotency-Key longer than 255 characters is refused', async (t) => {
  const { fake, send } = await setupActions(t)
  const response = await send('track-event', event, { headers: key('k'.repeat(256)) })
  t.equal(response.statusCode, 400)
  t.match(response.json(), { code: 'invalid_request', errors: [{ path: String, message: String }] })
  t.equal(fake.requests.length, 0)
  t.equal((await send('track-event', event, { headers: key('k'.repeat(255)) })).statusCode, 200)
})
