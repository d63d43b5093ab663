import { getEventListeners } from 'node:events'
import t from 'tap'
import { Pool } from 'undici'
import { AppError, problemBody } from '../src/errors.js'
import { buildUpstream } from '../src/segment/build.js'
import { Cancel, SegmentClient, defaultRetryAfterSeconds, type AttemptReport, type SegmentClientOptions } from '../src/segment/client.js'
import { startFakeSegment, type FakeSegment } from './fake-segment.js'

const writeKey = 'wk_TESTabcdefghijklmnopqrstuvwxyz12'
const basic = 'Basic ' + Buffer.from(writeKey + ':').toString('base64')
const userAgent = 'segment-forwarder/0.0.0-test'

async function setup (t: { teardown: (fn: () => Promise<void>) => void }, options: Partial<SegmentClientOptions> = {}): Promise<{ fake: FakeSegment, client: SegmentClient }> {
  const fake = await startFakeSegment()
  const client = new SegmentClient({ maxAttempts: 4, attemptTimeoutMs: 2000, deadlineMs: 8000, userAgent, random: () => 0, ...options })
  t.teardown(async () => {
    await fake.close()
    await client.close()
  })
  return { fake, client }
}

function batch () {
  return buildUpstream('batch-send', {
    batch: [{ type: 'track', userId: 'u1', event: 'Order Completed', properties: { revenue: 42 } }, { type: 'identify', userId: 'u1' }]
  }, { workspaceId: 'ws', connectionId: 'con', maxEventBytes: 32000, maxBatchBytes: 500000 })
}

async function failure (promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof AppError) return error
    throw error
  }
  throw new Error('expected an AppError')
}

function withoutSentAt (body: unknown): unknown {
  const { sentAt: _sentAt, ...rest } = body as Record<string, unknown>
  return rest
}

t.test('a 200 on the first attempt: exact request, one attempt', async (t) => {
  const { fake, client } = await setup(t)
  const built = batch()
  const attempts: AttemptReport[] = []
  const result = await client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }, { onAttempt: (a) => attempts.push(a) })
  t.same(result, { upstreamStatus: 200, attempts: 1 })
  t.equal(fake.requests.length, 1)
  const [request] = fake.requests
  t.equal(request!.method, 'POST')
  t.equal(request!.url, '/v1/batch')
  t.equal(request!.headers.authorization, basic)
  t.equal(request!.headers['content-type'], 'application/json')
  t.equal(request!.headers['user-agent'], userAgent)
  t.notOk('x-retry-count' in request!.headers)
  t.equal(Buffer.byteLength(request!.rawBody), built.bytes)
  t.match(request!.body, { batch: [{ messageId: built.messageIds[0] }, { messageId: built.messageIds[1] }], sentAt: /^\d{4}-\d\d-\d\dT/ })
  t.notOk(request!.rawBody.includes(writeKey), 'no writeKey in the body')
  t.match(attempts, [{ attempt: 1, status: 200 }])
  t.ok(attempts[0]!.durationMs >= 0)
})

t.test('retryable faults are retried with the same events and X-Retry-Count', async (t) => {
  const { fake, client } = await setup(t)
  fake.respondWith([{ status: 500 }, { reset: true }, { status: 503, body: 'busy' }])
  const built = batch()
  const attempts: AttemptReport[] = []
  const result = await client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }, { onAttempt: (a) => attempts.push(a) })
  t.same(result, { upstreamStatus: 200, attempts: 4 })
  t.same(attempts.map((a) => a.status), [500, 'error', 503, 200])
  t.same(fake.requests.map((r) => r.headers['x-retry-count']), [undefined, '1', '2', '3'])
  const first = withoutSentAt(fake.requests[0]!.body)
  for (const request of fake.requests) {
    t.same(withoutSentAt(request.body), first, 'same body apart from sentAt')
    t.equal(request.headers.authorization, basic)
  }
})

t.test('a hanging attempt times out and is retried', async (t) => {
  const { fake, client } = await setup(t, { attemptTimeoutMs: 300 })
  fake.respondWith([{ hang: true }])
  const built = batch()
  const attempts: AttemptReport[] = []
  const result = await client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }, { onAttempt: (a) => attempts.push(a) })
  t.same(result, { upstreamStatus: 200, attempts: 2 })
  t.same(attempts.map((a) => a.status), ['timeout', 200])
  t.ok(attempts[0]!.durationMs >= 250, 'the attempt waited for its timeout')
})

// HTTP-dates have whole seconds, so a date 2 s ahead means a wait of 1 to 2 s.
const retryAfters = [
  { form: 'in seconds', value: () => '1', atLeastMs: 900 },
  { form: 'as an HTTP-date', value: () => new Date(Date.now() + 2000).toUTCString(), atLeastMs: 500 }
]
for (const { form, value, atLeastMs } of retryAfters) {
  t.test(`429 with Retry-After ${form} is honoured`, async (t) => {
    const { fake, client } = await setup(t)
    fake.respondWith([{ status: 429, headers: { 'retry-after': value() } }])
    const built = batch()
    const result = await client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render })
    t.same(result, { upstreamStatus: 200, attempts: 2 })
    const waited = fake.requests[1]!.receivedAt - fake.requests[0]!.receivedAt
    t.ok(waited >= atLeastMs, `waited ${waited} ms`)
  })
}

t.test('a Retry-After beyond the deadline fails at once with 503 and that Retry-After', async (t) => {
  const { fake, client } = await setup(t, { deadlineMs: 3000 })
  fake.respondWith([{ status: 429, headers: { 'retry-after': '60' } }])
  const built = batch()
  const started = Date.now()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  t.equal(error.code, 'segment_unavailable')
  t.equal(error.status, 503)
  t.equal(error.retryAfter, 60)
  t.match(error.extras, { upstreamStatus: 429, attempts: 1 })
  t.equal(fake.requests.length, 1)
  t.ok(Date.now() - started < 2000, 'no waiting')
})

t.test('retryable failures that outlast the attempts: 503', async (t) => {
  const { fake, client } = await setup(t, { maxAttempts: 2 })
  fake.respondWith([{ status: 500 }, { status: 502 }])
  const built = batch()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  t.equal(error.code, 'segment_unavailable')
  t.match(error.extras, { upstreamStatus: 502, attempts: 2 })
  t.equal(error.retryAfter, defaultRetryAfterSeconds)
  t.equal(fake.requests.length, 2)
})

t.test('a 503 Retry-After is passed on when the attempts run out', async (t) => {
  const { fake, client } = await setup(t, { maxAttempts: 1 })
  fake.respondWith([{ status: 503, headers: { 'retry-after': '7' } }])
  const built = batch()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  t.equal(error.code, 'segment_unavailable')
  t.equal(error.retryAfter, 7)
})

t.test('connection errors are retried, then 503', async (t) => {
  const client = new SegmentClient({ maxAttempts: 3, attemptTimeoutMs: 1000, deadlineMs: 5000, userAgent, random: () => 0 })
  t.teardown(() => client.close())
  const attempts: AttemptReport[] = []
  // Port 1 on loopback: nothing listens, the connection is refused.
  const error = await failure(client.send({ baseUrl: 'http://127.0.0.1:1', path: '/v1/track', writeKey, render: batch().render }, { onAttempt: (a) => attempts.push(a) }))
  t.equal(error.code, 'segment_unavailable')
  t.same(attempts.map((a) => a.status), ['error', 'error', 'error'])
  t.notOk('upstreamStatus' in error.extras)
})

for (const step of [
  { status: 400, body: 'Bad Request' },
  { status: 401, body: '{"code":"unauthorized"}' },
  { status: 413, body: 'Exceed payload limit' },
  { status: 501 },
  { status: 302, headers: { location: 'http://127.0.0.1:1/x' } }
]) {
  t.test(`${step.status} is sent once and rejected`, async (t) => {
    const { fake, client } = await setup(t)
    fake.respondWith([step])
    const built = batch()
    const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
    t.equal(error.code, 'segment_rejected')
    t.equal(error.status, 502)
    t.match(error.extras, { upstreamStatus: step.status, upstreamBody: step.body ?? '', attempts: 1 })
    t.equal(fake.requests.length, 1, 'no retry, no redirect followed')
  })
}

t.test('the upstream excerpt is short and never carries the write key', async (t) => {
  const { fake, client } = await setup(t)
  fake.respondWith([
    { status: 400, body: `key ${writeKey} auth ${basic} ` + 'x'.repeat(100_000) }
  ])
  const built = batch()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  const excerpt = error.extras.upstreamBody!
  t.ok(excerpt.length <= 201, `excerpt of ${excerpt.length} characters`)
  const everything = JSON.stringify(problemBody(error)) + error.message + String(error.stack)
  t.notOk(everything.includes(writeKey))
  t.notOk(everything.includes(basic.slice(6)))
})

t.test('the deadline holds against a hanging upstream: no attempt starts that could not finish', async (t) => {
  const { fake, client } = await setup(t, { maxAttempts: 10, attemptTimeoutMs: 400, deadlineMs: 1000 })
  fake.respondWith(Array.from({ length: 10 }, () => ({ hang: true })))
  const built = batch()
  const started = Date.now()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  const elapsed = Date.now() - started
  t.equal(error.code, 'segment_unavailable')
  t.ok(error.retryAfter !== undefined && error.retryAfter >= 1)
  t.ok(elapsed < 1000 + 1500, `answered after ${elapsed} ms`)
  // 0-400 ms, 400-800 ms; a third attempt would end past 1000 ms (a slow machine may fit only one).
  t.ok(fake.requests.length >= 1 && fake.requests.length <= 2, `${fake.requests.length} attempts`)
})

t.test('an attempt cut by the deadline is a 504', async (t) => {
  const { fake, client } = await setup(t, { attemptTimeoutMs: 5000, deadlineMs: 300 })
  fake.respondWith([{ hang: true }])
  const built = batch()
  const started = Date.now()
  const error = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }))
  t.equal(error.code, 'segment_timeout')
  t.equal(error.status, 504)
  t.match(error.extras, { attempts: 1 })
  t.ok(Date.now() - started < 3000)
})

t.test('a slow answer within the attempt timeout succeeds', async (t) => {
  const { fake, client } = await setup(t)
  fake.respondWith([{ delayMs: 200, status: 200 }])
  const built = batch()
  t.same(await client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }), { upstreamStatus: 200, attempts: 1 })
})

// The caller's signal, an AbortSignal or the service's own Cancel emitter, stops a send at once:
// while an attempt waits for Segment and while the client waits between attempts.
const signals = {
  AbortSignal: () => {
    const controller = new AbortController()
    return { signal: controller.signal, abort: (reason: Error) => { controller.abort(reason) }, listeners: () => getEventListeners(controller.signal, 'abort').length }
  },
  Cancel: () => {
    const gone = new Cancel()
    return { signal: gone, abort: (reason: Error) => { gone.abort(reason) }, listeners: () => gone.listenerCount('abort') }
  }
}
const phases = [
  { phase: 'during an attempt', respond: { hang: true }, abortAfterMs: 100, withinMs: 1500 },
  { phase: 'during a wait between attempts', respond: { status: 429, headers: { 'retry-after': '5' } }, abortAfterMs: 200, withinMs: 3000 }
]
for (const [kind, make] of Object.entries(signals)) {
  for (const { phase, respond, abortAfterMs, withinMs } of phases) {
    t.test(`the caller's ${kind} stops the send at once, ${phase}`, async (t) => {
      const { fake, client } = await setup(t)
      fake.respondWith([respond])
      const built = batch()
      const caller = make()
      setTimeout(() => { caller.abort(new Error('client went away')) }, abortAfterMs)
      const started = Date.now()
      await t.rejects(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render, signal: caller.signal }), { message: 'client went away' })
      t.ok(Date.now() - started < withinMs)
      t.equal(fake.requests.length, 1)
      t.equal(caller.listeners(), 0, 'no listener is left on the signal')
    })
  }
  t.test(`an already-aborted ${kind} sends nothing`, async (t) => {
    const { fake, client } = await setup(t)
    const caller = make()
    caller.abort(new Error('already gone'))
    await t.rejects(client.send({ baseUrl: fake.url, path: '/v1/batch', writeKey, render: batch().render, signal: caller.signal }), { message: 'already gone' })
    t.equal(fake.requests.length, 0)
  })
}

t.test('one injected dispatcher per origin, reused, closed by close()', async (t) => {
  const fake = await startFakeSegment()
  t.teardown(() => fake.close())
  const made: Pool[] = []
  const client = new SegmentClient({
    maxAttempts: 1,
    attemptTimeoutMs: 2000,
    deadlineMs: 5000,
    userAgent,
    dispatcher: (origin) => {
      const pool = new Pool(origin)
      made.push(pool)
      return pool
    }
  })
  const built = batch()
  await client.send({ baseUrl: fake.url + '/', path: built.path, writeKey, render: built.render })
  await client.send({ baseUrl: fake.url, path: '/v1/track', writeKey, render: built.render })
  t.equal(made.length, 1)
  t.same(fake.requests.map((r) => r.url), ['/v1/batch', '/v1/track'])
  await client.close()
  t.ok(made[0]!.closed)
  await t.rejects(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render }), { message: /closed/ })
})

t.test('a caller\'s own deadline: what is left of it bounds the first attempt and the retries', async (t) => {
  const { fake, client } = await setup(t, { attemptTimeoutMs: 60_000, deadlineMs: 120_000 })
  const built = batch()
  // Spent while waiting for company: one attempt with what is left (at least 1 ms), then 504.
  fake.decide = () => ({ hang: true })
  const spent = await failure(client.send({ baseUrl: fake.url, path: built.path, writeKey, render: built.render, deadline: performance.now() - 10 }))
  t.equal(spent.code, 'segment_timeout')
  t.equal(spent.extras.attempts, 1)
  // Time left for the attempt but not for a retry after it: 503 with no second attempt.
  // (Another path, so a late arrival of the first case's aborted request cannot be miscounted.)
  fake.decide = (request) => request.url === '/v1/track' ? { status: 500 } : { hang: true }
  const short = await failure(client.send({ baseUrl: fake.url, path: '/v1/track', writeKey, render: built.render, deadline: performance.now() + 30_000 }))
  t.equal(short.code, 'segment_unavailable')
  t.equal(short.extras.attempts, 1)
  t.equal(fake.requests.filter((request) => request.url === '/v1/track').length, 1, 'one attempt only')
})
