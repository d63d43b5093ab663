// Coalescing (api.md § Coalescing) end to end, through the app against the loopback fake Segment.
// A first call is held in flight at the fake (a gate) so that the calls under test wait for it;
// each test waits for the lane to hold them (app.coalescer.waitingEvents) before opening the gate,
// so nothing depends on timing.
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { Pool } from 'undici'
import { buildUpstream } from '../src/segment/build.js'
import { Cancel, SegmentClient } from '../src/segment/client.js'
import { Coalescer, laneKey, type CoalesceCall } from '../src/segment/coalesce.js'
import { createConnection } from './helper.js'
import type { RecordedRequest } from './fake-segment.js'
import { GENERATED_ID, WRITE_KEY, basicAuth, fakeSegment, setupActions, withoutSentAt, type ActionName, type ActionsSetup } from './support/actions.js'

type Json = Record<string, unknown>

function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}

/** Waits for a condition (no timing is asserted; tap's timeout bounds a hang). */
async function until (check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 2))
}

/** Holds the next upstream request at the fake with a call of its own, and waits until it is there. */
async function holdLane (setup: ActionsSetup, connectionId = setup.connectionId): Promise<{ open: () => void, first: Promise<Json> }> {
  const held = gate()
  setup.fake.respondWith([{ until: held.promise }])
  const count = setup.fake.requests.length
  const first = setup.send('track-event', { userId: 'first', event: 'First' }, { connectionId }).then((r) => r.json<Json>())
  await setup.fake.waitForRequests(count + 1)
  return { open: held.open, first }
}

/** Every event Segment received, as [request index, event]. */
function upstreamEvents (requests: RecordedRequest[]): Array<[number, Json]> {
  return requests.flatMap((request, index) => {
    const body = request.body as Json
    return request.url === '/v1/batch' ? (body.batch as Json[]).map((item): [number, Json] => [index, item]) : [[index, body]]
  })
}

function completedLines (logs: string[]): Json[] {
  return logs.map((line) => JSON.parse(line) as Json).filter((line) => line.msg === 'request completed' && line.action !== undefined)
}

function checkEachIdOnce (t: Test, requests: RecordedRequest[], ids: string[]): void {
  const received = upstreamEvents(requests).map(([, event]) => event.messageId as string)
  t.equal(new Set(received).size, received.length, 'no messageId reached Segment twice')
  t.same([...received].sort(), [...ids].sort(), 'every answered messageId reached Segment, and nothing else')
}

t.test('lone calls go out at once, to their own path, unchanged', async (t) => {
  const setup = await setupActions(t)
  const { fake, send, app } = setup
  const body = { userId: 'u1', event: 'Alone', properties: { n: 1 } }
  for (let i = 0; i < 3; i++) {
    const answer = (await send('track-event', body)).json<Json>()
    t.match(answer, { status: 'accepted', attempts: 1, upstreamStatus: 200 })
    const request = fake.requests[i]!
    t.equal(request.url, '/v1/track', 'its own path')
    t.same(withoutSentAt(request.body), { ...body, messageId: answer.messageId, context: { library: { name: 'segment-forwarder', version: (withoutSentAt(request.body).context as Json & { library: { version: string } }).library.version } } }, 'its own body')
    t.equal(answer.bytes, request.rawBody.length, 'bytes are those sent')
  }
  t.equal(app.coalescer.lanes, 0, 'an idle lane is forgotten')
  t.same(completedLines(setup.logs).map((line) => line.upstreamEvents), [1, 1, 1], 'upstreamEvents 1 in each log line')
})

t.test('calls that arrive while one is in flight go together in one /v1/batch, each with its own answer', async (t) => {
  const setup = await setupActions(t)
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const N = 40
  const bodies = Array.from({ length: N }, (_, i) => ({ userId: `user-${i}`, event: 'Joined', properties: { i, note: 'crème brûlée 🎉' } }))
  const calls = bodies.map(async (body) => await send('track-event', body))
  await until(() => app.coalescer.waitingEvents === N)
  t.equal(fake.requests.length, 1, 'nothing more is sent while the first is in flight')
  open()
  const responses = await Promise.all(calls)
  const answers = responses.map((r) => r.json<Json>())
  t.match(await first, { status: 'accepted', attempts: 1 })

  t.equal(fake.requests.length, 2, 'the 40 waiting calls went in one upstream request')
  const batch = fake.requests[1]!
  t.equal(batch.url, '/v1/batch')
  t.equal(batch.headers.authorization, basicAuth(WRITE_KEY))
  t.same(Object.keys(batch.body as Json).sort(), ['batch', 'sentAt'], 'no top-level fields but batch and sentAt')
  const items = (batch.body as { batch: Json[] }).batch
  t.equal(items.length, N)

  // Each caller's own answer: its messageId, bytes as if sent alone, the batch's attempts and status.
  const dry = await Promise.all(bodies.map(async (body) => (await send('track-event', body, { query: 'dryRun=true' })).json<Json>()))
  for (const [i, answer] of answers.entries()) {
    t.equal(responses[i]!.statusCode, 200)
    t.match(answer.messageId, GENERATED_ID)
    t.same({ ...answer, messageId: 'x' }, { status: 'accepted', action: 'track-event', messageId: 'x', bytes: dry[i]!.bytes, attempts: 1, upstreamStatus: 200 }, `answer ${i}: bytes as if sent alone`)
    const item = items.find((event) => event.messageId === answer.messageId)!
    const { type, context, ...rest } = item
    t.equal(type, 'track', 'each single call becomes an item with its type')
    t.same(rest, { ...bodies[i], messageId: answer.messageId }, 'the item is the caller\'s event')
    t.same(Object.keys(context as Json), ['library'])
  }
  checkEachIdOnce(t, fake.requests, [(await first).messageId as string, ...answers.map((a) => a.messageId as string)])

  const lines = completedLines(setup.logs).filter((line) => line.dryRun === undefined)
  t.same(lines.map((line) => line.upstreamEvents).sort((a, b) => Number(a) - Number(b)), [1, ...Array(N).fill(N)], 'upstreamEvents: 1 for the first, 40 for each joined call')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /segment_forwarder_upstream_request_events_count 2\n/, 'two upstream requests')
  t.match(metrics, new RegExp(`segment_forwarder_upstream_request_events_sum ${N + 1}\\n`), 'carrying 41 events')
  t.match(metrics, /segment_forwarder_upstream_attempts_total\{status="200"\} 2\n/, 'attempts are counted once per upstream request')
  t.equal(app.coalescer.lanes, 0)
})

t.test('mixed action types join; a joining batch-send keeps its context and integrations to its own items', async (t) => {
  const setup = await setupActions(t)
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const calls: Array<[ActionName, Json]> = [
    ['track-event', { userId: 'u1', event: 'Order Completed', properties: { total: 3 } }],
    ['identify-user', { userId: 'u1', traits: { plan: 'pro' }, type: 'identify' }],
    ['group-user', { userId: 'u1', groupId: 'g1', traits: { name: 'Initech' } }],
    ['page-view', { anonymousId: 'a1', name: 'Pricing', context: { library: { name: 'mine', version: '1' } } }],
    ['alias-user', { previousId: 'a1', userId: 'u1' }],
    ['batch-send', {
      batch: [
        { type: 'track', userId: 'u2', event: 'Viewed', context: { ip: '1.1.1.1' } },
        { type: 'screen', userId: 'u2', name: 'Home', integrations: { Mixpanel: false } }
      ],
      context: { ip: '9.9.9.9', locale: 'fr-FR' },
      integrations: { All: false, Mixpanel: true }
    }],
    // A top-level field other than context and integrations has no per-item meaning: alone.
    ['batch-send', { batch: [{ type: 'track', userId: 'u3', event: 'Own' }], custom: { kept: true } }]
  ]
  const pending = calls.map(async ([action, body]) => await send(action, body))
  await until(() => app.coalescer.waitingEvents === 8)
  open()
  const answers = (await Promise.all(pending)).map((r) => { t.equal(r.statusCode, 200); return r.json<Json>() })
  await first

  t.equal(fake.requests.length, 3, 'the first, one joined batch, and the batch-send that cannot join')
  const alone = fake.requests.find((r) => (r.body as Json).custom !== undefined)!
  t.equal(alone.url, '/v1/batch')
  const own = withoutSentAt(alone.body) as { batch: Json[], custom: unknown }
  t.same(own.custom, { kept: true }, 'the batch-send that went alone is its own body')
  t.same(own.batch.map((item) => [item.userId, item.messageId]), [['u3', (answers[6]!.messageIds as string[])[0]]])
  t.equal(answers[6]!.bytes, alone.rawBody.length, 'its bytes are those sent')

  const joined = fake.requests.find((r) => r !== alone && r.url === '/v1/batch')!
  t.same(Object.keys(joined.body as Json).sort(), ['batch', 'sentAt'], 'the batch-send\'s context and integrations are not top-level')
  const items = (joined.body as { batch: Json[] }).batch
  const byId = (id: unknown): Json => items.find((item) => item.messageId === id)!
  t.same(['track', 'identify', 'group', 'page', 'alias'].map((type, i) => byId(answers[i]!.messageId).type), ['track', 'identify', 'group', 'page', 'alias'], 'each call is an item of its type')
  t.same(byId(answers[3]!.messageId).context, { library: { name: 'mine', version: '1' } }, 'a caller\'s own library is kept')
  for (let i = 0; i < 5; i++) {
    t.equal(byId(answers[i]!.messageId).integrations, undefined, `call ${i} gets none of the batch-send's integrations`)
    t.equal((byId(answers[i]!.messageId).context as Json).locale, undefined, `call ${i} gets none of the batch-send's context`)
  }
  const [trackId, screenId] = answers[5]!.messageIds as string[]
  t.match(byId(trackId).context, { ip: '1.1.1.1', locale: 'fr-FR' }, 'the item\'s context key wins over the batch\'s')
  t.same(byId(trackId).integrations, { All: false, Mixpanel: true }, 'the batch\'s integrations merged into its items')
  t.same(byId(screenId).integrations, { All: false, Mixpanel: false }, 'the item\'s integrations key wins')
  t.match(byId(screenId).context, { ip: '9.9.9.9', locale: 'fr-FR' })
  t.equal(answers[5]!.count, 2)
  const dry = (await send('batch-send', calls[5]![1], { query: 'dryRun=true' })).json<Json>()
  t.equal(answers[5]!.bytes, dry.bytes, 'the joined batch-send\'s bytes are those of its own body')
  checkEachIdOnce(t, fake.requests, [(await first).messageId as string, ...answers.flatMap((a) => (a.messageIds as string[] | undefined) ?? [a.messageId as string])])
})

t.test('lanes never mix Write Keys', async (t) => {
  const setup = await setupActions(t)
  const { fake, app, workspace } = setup
  const otherKey = 'wk_other_Zr8mQ2xL5vN1'
  const { id: other } = await createConnection(app, workspace, { writeKey: otherKey })
  const laneA = await holdLane(setup)
  const laneB = await holdLane(setup, other)
  const ids = [setup.connectionId, other]
  const pending = Array.from({ length: 12 }, async (_, i) => {
    const response = await setup.send('track-event', { userId: `u${i}`, event: 'E' }, { connectionId: ids[i % 2] })
    return { connection: i % 2, answer: response.json<Json>() }
  })
  await until(() => app.coalescer.waitingEvents === 12)
  laneA.open()
  laneB.open()
  const results = await Promise.all(pending)
  await Promise.all([laneA.first, laneB.first])
  t.equal(fake.requests.length, 4, 'one lone call and one batch per lane')
  const keys = [WRITE_KEY, otherKey]
  for (const { connection, answer } of results) {
    const carrying = fake.requests.filter((request) => upstreamEvents([request]).some(([, event]) => event.messageId === answer.messageId))
    t.equal(carrying.length, 1)
    t.equal(carrying[0]!.headers.authorization, basicAuth(keys[connection]!), 'sent with its own connection\'s Write Key')
    t.equal(upstreamEvents(carrying).length, 6, 'with the 6 calls of its own lane only')
  }
})

t.test('joining stays within the batch byte limit, measured exactly', async (t) => {
  const setup = await setupActions(t, { SEGMENT_MAX_BATCH_BYTES: '2000', SEGMENT_MAX_EVENT_BYTES: '1000' })
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const N = 20
  const pending = Array.from({ length: N }, async (_, i) => await send('track-event', { userId: `user-${i}`, event: 'Sized', properties: { pad: 'é'.repeat(50 + i * 7) } }))
  await until(() => app.coalescer.waitingEvents === N)
  open()
  const answers = (await Promise.all(pending)).map((r) => { t.equal(r.statusCode, 200); return r.json<Json>() })
  await first
  const batches = fake.requests.slice(1)
  t.ok(batches.length >= 4, `split into ${batches.length} requests`)
  const itemBytes = (item: Json): number => Buffer.byteLength(JSON.stringify(item))
  for (const [index, request] of batches.entries()) {
    t.ok(Buffer.byteLength(request.rawBody) <= 2000, `request ${index}: ${Buffer.byteLength(request.rawBody)} bytes, within 2,000`)
    const next = batches[index + 1]
    if (next === undefined || request.url !== '/v1/batch') continue
    // Greedy in arrival order: the next request's first event would not have fitted.
    const nextFirst = upstreamEvents([next])[0]![1]
    const asItem = next.url === '/v1/batch' ? nextFirst : { type: 'track', ...nextFirst }
    t.ok(Buffer.byteLength(request.rawBody) + 1 + itemBytes(asItem) > 2000, `request ${index} was full`)
  }
  checkEachIdOnce(t, fake.requests, [(await first).messageId as string, ...answers.map((a) => a.messageId as string)])
})

t.test('joining stays within 2,500 events; a batch-send is never split', async (t) => {
  const setup = await setupActions(t)
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const batchOf = (k: number): Json => ({ batch: Array.from({ length: 1000 }, (_, i) => ({ type: 'track', userId: `u${k}-${i}`, event: 'E', messageId: `m-${k}-${i}` })) })
  const pending = [0, 1, 2].map(async (k) => await send('batch-send', batchOf(k)))
  await until(() => app.coalescer.waitingEvents === 3000)
  open()
  const answers = (await Promise.all(pending)).map((r) => { t.equal(r.statusCode, 200); return r.json<Json>() })
  await first
  const counts = fake.requests.slice(1).map((request) => upstreamEvents([request]).length)
  t.same(counts, [2000, 1000], 'two batch-sends joined; the third would pass 2,500 and went alone')
  for (const [k, answer] of answers.entries()) {
    const carrying = new Set(upstreamEvents(fake.requests).filter(([, event]) => (answer.messageIds as string[]).includes(event.messageId as string)).map(([index]) => index))
    t.equal(carrying.size, 1, `batch-send ${k} went whole in one request`)
  }
})

t.test('a retryable failure retries the whole joined request; when it outlasts the attempts every caller gets the 503', async (t) => {
  const setup = await setupActions(t, { SEGMENT_MAX_ATTEMPTS: '2' })
  const { fake, send, app } = setup
  let held = await holdLane(setup)
  fake.respondWith([{ status: 500 }, { status: 200 }])
  let pending = Array.from({ length: 5 }, async (_, i) => await send('track-event', { userId: `u${i}`, event: 'Retried' }))
  await until(() => app.coalescer.waitingEvents === 5)
  held.open()
  let answers = (await Promise.all(pending)).map((r) => { t.equal(r.statusCode, 200); return r.json<Json>() })
  await held.first
  t.same(answers.map((a) => [a.attempts, a.upstreamStatus]), Array(5).fill([2, 200]), 'each caller: 2 attempts, 200')
  t.equal(fake.requests.length, 3)
  t.same(withoutSentAt(fake.requests[2]!.body), withoutSentAt(fake.requests[1]!.body), 'the same joined body again')
  t.equal(fake.requests[2]!.headers['x-retry-count'], '1')

  fake.reset()
  held = await holdLane(setup)
  fake.respondWith([{ status: 503, headers: { 'retry-after': '0' } }, { status: 503, headers: { 'retry-after': '0' } }])
  pending = Array.from({ length: 5 }, async (_, i) => await send('track-event', { userId: `u${i}`, event: 'Failed' }))
  await until(() => app.coalescer.waitingEvents === 5)
  held.open()
  const responses = await Promise.all(pending)
  await held.first
  answers = responses.map((r) => r.json<Json>())
  for (const [i, response] of responses.entries()) {
    t.equal(response.statusCode, 503, `caller ${i}`)
    t.match(answers[i], { code: 'segment_unavailable', attempts: 2, upstreamStatus: 503 })
    t.ok(response.headers['retry-after'] !== undefined, 'Retry-After set')
  }
  t.equal(fake.requests.length, 3, 'one joined request, attempted twice')
})

t.test('a joined request Segment refuses is split, so only the refused call gets the 502', async (t) => {
  const setup = await setupActions(t)
  const { fake, send, app } = setup
  fake.decide = (request) => {
    if (request.url === '/v1/batch') return { status: 400, body: { success: false, message: 'bad batch' } }
    if ((request.body as Json).event === 'Refused') return { status: 400, body: { success: false, message: 'bad event' } }
    return undefined
  }
  const { open, first } = await holdLane(setup)
  const events = ['Fine', 'Fine', 'Refused', 'Fine', 'Fine']
  const pending = events.map(async (event, i) => await send('track-event', { userId: `u${i}`, event }))
  await until(() => app.coalescer.waitingEvents === events.length)
  open()
  const responses = await Promise.all(pending)
  await first
  for (const [i, response] of responses.entries()) {
    const answer = response.json<Json>()
    if (events[i] === 'Refused') {
      t.equal(response.statusCode, 502, 'the refused call')
      t.match(answer, { code: 'segment_rejected', upstreamStatus: 400, attempts: 2 })
    } else {
      t.equal(response.statusCode, 200, `call ${i} accepted`)
      t.match(answer, { status: 'accepted', upstreamStatus: 200, attempts: 2 })
    }
  }
  const resent = fake.requests.slice(2)
  t.equal(fake.requests[1]!.url, '/v1/batch')
  t.equal(resent.length, 5, 'each call resent alone')
  t.ok(resent.every((request) => request.url === '/v1/track'), 'to its own path')
  t.same(resent.map((r) => (r.body as Json).userId).sort(), ['u0', 'u1', 'u2', 'u3', 'u4'])
})

t.test('callers that disconnect do not cancel the others', async (t) => {
  const setup = await setupActions(t)
  const { fake, app, workspace, connectionId } = setup
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const connections = async (): Promise<number> => await new Promise((resolve, reject) => app.server.getConnections((error, n) => error === null ? resolve(n) : reject(error)))
  const call = (userId: string, signal?: AbortSignal): { pool: Pool, response: Promise<{ status: number, body: Json } | Error> } => {
    // One socket per caller, so a hang-up closes only its own.
    const pool = new Pool(base, { connections: 1 })
    t.teardown(async () => { await pool.destroy() })
    const response = pool.request({
      method: 'POST',
      path: `/v1/connections/${connectionId}/actions/track-event`,
      headers: { ...workspace.auth, 'content-type': 'application/json' },
      body: JSON.stringify({ userId, event: 'Disconnects' }),
      ...(signal === undefined ? {} : { signal })
    }).then(async (r) => ({ status: r.statusCode, body: await r.body.json() as Json }), (error: Error) => error)
    return { pool, response }
  }

  // A waiting caller that hangs up leaves the lane; the others go on.
  let held = await holdLane(setup)
  let hangUp = new AbortController()
  const a = call('A')
  const b = call('B', hangUp.signal)
  const c = call('C')
  await until(() => app.coalescer.waitingEvents === 3)
  hangUp.abort()
  t.ok(await b.response instanceof Error, 'B hung up')
  await until(() => app.coalescer.waitingEvents === 2)
  held.open()
  t.match(await a.response, { status: 200 })
  t.match(await c.response, { status: 200 })
  await held.first
  t.same((fake.requests[1]!.body as { batch: Json[] }).batch.map((item) => item.userId), ['A', 'C'], 'B\'s event was not sent')

  // A caller that hangs up while its joined request is in flight: the request goes on for the others.
  fake.reset()
  const batchGate = gate()
  fake.decide = (request) => request.url === '/v1/batch' ? { until: batchGate.promise } : undefined
  held = await holdLane(setup)
  hangUp = new AbortController()
  const d = call('D')
  const e = call('E', hangUp.signal)
  const f = call('F')
  await until(() => app.coalescer.waitingEvents === 3)
  held.open()
  await fake.waitForRequests(2)
  const before = await connections()
  hangUp.abort()
  t.ok(await e.response instanceof Error, 'E hung up')
  // The server has seen E's socket close.
  while (await connections() >= before) await new Promise((resolve) => setTimeout(resolve, 2))
  batchGate.open()
  t.match(await d.response, { status: 200, body: { status: 'accepted', attempts: 1, upstreamStatus: 200 } })
  t.match(await f.response, { status: 200, body: { status: 'accepted', attempts: 1, upstreamStatus: 200 } })
  await held.first
  t.equal(fake.requests.length, 2, 'the joined request was neither cancelled nor sent again')
  t.same((fake.requests[1]!.body as { batch: Json[] }).batch.map((item) => item.userId), ['D', 'E', 'F'])
  await until(() => app.coalescer.lanes === 0)
})

t.test('past the per-lane cap on waiting events: 503 overloaded with Retry-After', async (t) => {
  const setup = await setupActions(t, { COALESCE_MAX_WAITING_EVENTS: '3' })
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const pending = Array.from({ length: 3 }, async (_, i) => await send('track-event', { userId: `u${i}`, event: 'Waits' }))
  await until(() => app.coalescer.waitingEvents === 3)
  const refused = await send('track-event', { userId: 'u9', event: 'Too many' })
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { code: 'overloaded' })
  t.equal(refused.headers['retry-after'], '1')
  const refusedBatch = await send('batch-send', { batch: [{ type: 'track', userId: 'x', event: 'E' }] })
  t.equal(refusedBatch.statusCode, 503, 'a batch-send too')
  open()
  t.same((await Promise.all(pending)).map((r) => r.statusCode), [200, 200, 200])
  await first
  t.equal(fake.requests.length, 2, 'the refused calls were not sent')
  t.equal((await send('track-event', { userId: 'u9', event: 'Later' })).statusCode, 200, 'an idle lane takes calls again')
})

t.test('COALESCE=off sends every call alone, at once', async (t) => {
  const setup = await setupActions(t, { COALESCE: 'off' })
  const { fake, send, app } = setup
  const { open, first } = await holdLane(setup)
  const pending = Array.from({ length: 10 }, async (_, i) => await send('track-event', { userId: `u${i}`, event: 'Off' }))
  // All ten reach Segment while the first is still held: nothing waits.
  await fake.waitForRequests(11)
  t.equal(app.coalescer.waitingEvents, 0)
  open()
  const answers = (await Promise.all(pending)).map((r) => r.json<Json>())
  await first
  t.ok(fake.requests.every((request) => request.url === '/v1/track'), 'each to its own path')
  t.same(answers.map((a) => a.attempts), Array(10).fill(1))
  t.ok(completedLines(setup.logs).every((line) => line.upstreamEvents === 1), 'upstreamEvents 1 in every line')
})

t.test('the coalescer alone: a caller already gone sends nothing; a joined request is cancelled only once all its callers are gone', async (t) => {
  const fake = await fakeSegment(t)
  // Attempts long enough that only a cancellation can end a request that hangs.
  const client = new SegmentClient({ maxAttempts: 1, attemptTimeoutMs: 600_000, deadlineMs: 600_000, userAgent: 'test' })
  t.teardown(async () => { await client.close() })
  const coalescer = new Coalescer(client, { enabled: true, deadlineMs: 600_000, maxBatchBytes: 500_000, maxWaitingEvents: 100 })
  const options = { workspaceId: 'ws_1', connectionId: 'con_1', maxEventBytes: 32_000, maxBatchBytes: 500_000 }
  const call = (userId: string, signal?: Cancel): CoalesceCall => ({
    lane: laneKey('con_1', fake.url, 'wk_unit'),
    baseUrl: fake.url,
    writeKey: 'wk_unit',
    upstream: buildUpstream('track-event', { userId, event: 'E' }, options),
    ...(signal === undefined ? {} : { signal })
  })

  const gone = new Cancel()
  gone.abort(new Error('already gone'))
  await t.rejects(coalescer.send(call('u0', gone)), { message: 'already gone' })
  t.equal(fake.requests.length, 0, 'nothing sent')

  const held = gate()
  fake.decide = (request) => request.url === '/v1/batch' ? { hang: true } : { until: held.promise }
  const first = coalescer.send(call('first'))
  await fake.waitForRequests(1)
  const a = new Cancel()
  const b = new Cancel()
  const answerA = coalescer.send(call('a', a)).catch((error: unknown) => error)
  const answerB = coalescer.send(call('b', b)).catch((error: unknown) => error)
  await until(() => coalescer.waitingEvents === 2)
  held.open()
  t.match(await first, { upstreamStatus: 200, upstreamEvents: 1 })
  await fake.waitForRequests(2)
  a.abort(new Error('a left'))
  t.match(await answerA, { message: 'a left' }, 'a is answered at once')
  t.equal(coalescer.lanes, 1, 'the joined request goes on for b')
  b.abort(new Error('b left'))
  t.match(await answerB, { message: 'b left' })
  // The request hangs upstream: only its cancellation ends it and frees the lane.
  await until(() => coalescer.lanes === 0)
  t.equal(fake.requests.length, 2)
})
