import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import type { FakeSegment, FakeStep } from './fake-segment.js'
import { WRITE_KEY, basicAuth, setupActions, withoutSentAt, type ActionsSetup } from './support/actions.js'

// Short timeouts keep the file fast; upper bounds on durations are generous (a shared, noisy
// machine), lower bounds only where the service must wait (Retry-After).
const fast = { SEGMENT_MAX_ATTEMPTS: '4', SEGMENT_ATTEMPT_TIMEOUT_MS: '1000', SEGMENT_DEADLINE_MS: '8000' }
const event = { userId: 'u1', event: 'Order Completed', properties: { orderId: 'ord_1' } }

/** Every attempt carried the same event, messageId and headers, numbered by X-Retry-Count. */
function checkAttempts (t: Test, fake: FakeSegment, count: number, path = '/v1/track'): void {
  t.equal(fake.requests.length, count, `${count} attempt(s) reached Segment`)
  const [first] = fake.requests
  for (const [index, request] of fake.requests.entries()) {
    t.equal(request.url, path)
    t.equal(request.headers.authorization, basicAuth(WRITE_KEY))
    if (index === 0) t.notOk('x-retry-count' in request.headers, 'no x-retry-count on the first attempt')
    else t.equal(request.headers['x-retry-count'], String(index), `x-retry-count ${index}`)
    t.same(withoutSentAt(request.body), withoutSentAt(first!.body), `attempt ${index + 1}: same body except sentAt`)
    t.equal(Buffer.byteLength(request.rawBody), Buffer.byteLength(first!.rawBody), 'same size')
  }
}

async function retriedThenOk (t: Test, setup: ActionsSetup, steps: FakeStep[]): Promise<LightMyRequestResponse> {
  setup.fake.reset()
  setup.fake.respondWith(steps)
  const response = await setup.send('track-event', event)
  t.equal(response.statusCode, 200, 'accepted in the end')
  t.same(response.json(), {
    status: 'accepted',
    action: 'track-event',
    messageId: (setup.fake.requests[0]!.body as { messageId: string }).messageId,
    bytes: Buffer.byteLength(setup.fake.requests[0]!.rawBody),
    attempts: steps.length + 1,
    upstreamStatus: 200
  }, 'the answer reports the attempts, the final status and the messageId sent every time')
  checkAttempts(t, setup.fake, steps.length + 1)
  return response
}

function checkProblem (t: Test, response: LightMyRequestResponse, status: number, expected: Record<string, unknown>): Record<string, unknown> {
  t.equal(response.statusCode, status, String(status))
  t.match(response.headers['content-type'], /^application\/problem\+json/, 'problem+json')
  const body = response.json()
  t.match(body, { status, title: String, detail: String, ...expected })
  return body
}

// The cases that share the `fast` policy share one app; each starts from a reset fake.
t.test('retryable failures, then 200', async (t) => {
  const setup = await setupActions(t, fast)

  t.test('a reset connection', async (t) => { await retriedThenOk(t, setup, [{ reset: true }]) })
  t.test('500', async (t) => { await retriedThenOk(t, setup, [{ status: 500, body: 'internal' }]) })
  t.test('503', async (t) => { await retriedThenOk(t, setup, [{ status: 503 }]) })
  t.test('500, 502, 408: retry counts 1, 2, 3', async (t) => {
    await retriedThenOk(t, setup, [{ status: 500 }, { status: 502 }, { status: 408 }])
  })

  t.test('429 with Retry-After in seconds is honoured', async (t) => {
    await retriedThenOk(t, setup, [{ status: 429, headers: { 'retry-after': '1' } }])
    const [first, second] = setup.fake.requests
    t.ok(second!.receivedAt - first!.receivedAt >= 900, `waited ${second!.receivedAt - first!.receivedAt} ms (asked 1 s)`)
  })

  t.test('429 with Retry-After as an HTTP-date is honoured', async (t) => {
    // toUTCString() drops milliseconds: the date is 1 to 2 s away.
    await retriedThenOk(t, setup, [{ status: 429, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } }])
    const [first, second] = setup.fake.requests
    t.ok(second!.receivedAt - first!.receivedAt >= 800, `waited ${second!.receivedAt - first!.receivedAt} ms`)
  })

  t.test('batch-send: the same messageIds on every attempt', async (t) => {
    setup.fake.reset()
    setup.fake.respondWith([{ status: 503 }, { reset: true }])
    const response = await setup.send('batch-send', {
      batch: [{ type: 'track', userId: 'u', event: 'A' }, { type: 'identify', userId: 'u' }, { type: 'alias', previousId: 'p', userId: 'u' }]
    })
    t.equal(response.statusCode, 200)
    t.match(response.json(), { status: 'accepted', count: 3, attempts: 3, upstreamStatus: 200 })
    checkAttempts(t, setup.fake, 3, '/v1/batch')
    for (const request of setup.fake.requests) {
      t.same((request.body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId), response.json().messageIds)
    }
  })
})

t.test('a hanging Segment: each attempt times out and is retried', async (t) => {
  const setup = await setupActions(t, { SEGMENT_MAX_ATTEMPTS: '3', SEGMENT_ATTEMPT_TIMEOUT_MS: '300', SEGMENT_DEADLINE_MS: '6000' })
  t.test('then answers: accepted on the second attempt', async (t) => {
    await retriedThenOk(t, setup, [{ hang: true }])
  })
  t.test('never answers: 503 segment_unavailable with Retry-After after every attempt', async (t) => {
    setup.fake.reset()
    setup.fake.respondWith([{ hang: true }, { hang: true }, { hang: true }])
    const started = Date.now()
    const response = await setup.send('track-event', event)
    const body = checkProblem(t, response, 503, { code: 'segment_unavailable', attempts: 3 })
    t.notOk('upstreamStatus' in body, 'no status was ever received')
    t.match(response.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After set')
    t.ok(Date.now() - started < 6000 + 5000, 'within the deadline (generous margin)')
    checkAttempts(t, setup.fake, 3)
  })
})

t.test('a deadline shorter than the attempt timeout: 504 segment_timeout', async (t) => {
  const setup = await setupActions(t, { SEGMENT_MAX_ATTEMPTS: '4', SEGMENT_ATTEMPT_TIMEOUT_MS: '5000', SEGMENT_DEADLINE_MS: '400' })
  setup.fake.respondWith([{ hang: true }])
  const started = Date.now()
  const response = await setup.send('track-event', event)
  const elapsed = Date.now() - started
  checkProblem(t, response, 504, { code: 'segment_timeout', attempts: 1 })
  t.ok(elapsed >= 350, `waited for the deadline (${elapsed} ms)`)
  t.ok(elapsed < 400 + 4000, `returned soon after the deadline, not after the attempt timeout (${elapsed} ms)`)
  checkAttempts(t, setup.fake, 1)
})

t.test('statuses retrying cannot fix: sent once, 502 segment_rejected with status and excerpt', async (t) => {
  const setup = await setupActions(t, fast)
  const cases: Array<{ status: number, body?: string, headers?: Record<string, string>, excerpt: string }> = [
    { status: 400, body: '{"error":"bad payload"}', excerpt: '{"error":"bad payload"}' },
    { status: 401, body: `Unauthorized: invalid write key ${WRITE_KEY} (${basicAuth(WRITE_KEY)})`, excerpt: 'Unauthorized: invalid write key [redacted] (Basic [redacted])' },
    { status: 403, body: 'forbidden', excerpt: 'forbidden' },
    { status: 404, body: '  not found \n', excerpt: 'not found' },
    { status: 413, body: 'too big', excerpt: 'too big' },
    { status: 422, body: 'unprocessable', excerpt: 'unprocessable' },
    { status: 501, body: 'not implemented', excerpt: 'not implemented' },
    { status: 505, body: 'version', excerpt: 'version' },
    { status: 301, headers: { location: `${setup.fake.url}/v1/track` }, excerpt: '' },
    { status: 302, headers: { location: `${setup.fake.url}/v1/track` }, body: 'Found', excerpt: 'Found' },
    { status: 307, headers: { location: `${setup.fake.url}/v1/track` }, excerpt: '' },
    { status: 400, body: 'é'.repeat(5000), excerpt: 'é'.repeat(200) + '…' }
  ]
  for (const { status, body, headers, excerpt } of cases) {
    setup.fake.reset()
    setup.fake.respondWith([{ status, ...(body === undefined ? {} : { body }), ...(headers === undefined ? {} : { headers }) }])
    const response = await setup.send('identify-user', { userId: 'u' })
    const problem = checkProblem(t, response, 502, { code: 'segment_rejected', upstreamStatus: status, attempts: 1 })
    t.equal(problem.upstreamBody, excerpt, `${status}: excerpt of Segment's body`)
    t.equal(setup.fake.requests.length, 1, `${status}: sent exactly once (no retry, no redirect followed)`)
    t.notOk(response.body.includes(WRITE_KEY), `${status}: the answer never echoes the Write Key`)
  }
})

t.test('every attempt fails: 503 segment_unavailable, attempts = SEGMENT_MAX_ATTEMPTS', async (t) => {
  const setup = await setupActions(t, fast)
  t.test('5xx each time', async (t) => {
    setup.fake.reset()
    setup.fake.respondWith([{ status: 500 }, { status: 502 }, { status: 503 }, { status: 500 }, { status: 200 }])
    const response = await setup.send('track-event', event)
    checkProblem(t, response, 503, { code: 'segment_unavailable', attempts: 4, upstreamStatus: 500 })
    t.match(response.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After set')
    checkAttempts(t, setup.fake, 4)
  })
  t.test('connection resets each time', async (t) => {
    setup.fake.reset()
    setup.fake.respondWith([{ reset: true }, { reset: true }, { reset: true }, { reset: true }])
    const response = await setup.send('page-view', { anonymousId: 'a' })
    const body = checkProblem(t, response, 503, { code: 'segment_unavailable', attempts: 4 })
    t.notOk('upstreamStatus' in body, 'no status was ever received')
    t.match(response.headers['retry-after'], /^[1-9]\d*$/)
    checkAttempts(t, setup.fake, 4, '/v1/page')
  })
})

t.test('every attempt answers 429: the last Retry-After is passed on', async (t) => {
  const setup = await setupActions(t, { ...fast, SEGMENT_MAX_ATTEMPTS: '2' })
  setup.fake.respondWith([{ status: 429, headers: { 'retry-after': '1' } }, { status: 429, headers: { 'retry-after': '3' } }])
  const response = await setup.send('group-user', { userId: 'u', groupId: 'g' })
  checkProblem(t, response, 503, { code: 'segment_unavailable', attempts: 2, upstreamStatus: 429 })
  t.equal(response.headers['retry-after'], '3')
  checkAttempts(t, setup.fake, 2, '/v1/group')
})

t.test('the deadline holds: no attempt starts that could not finish in time', async (t) => {
  // Each attempt may take 1 s; after the first failure a second one could still finish within
  // 2.5 s, a third could not: the caller gets 503 with Retry-After well before 2.5 s + margin.
  const setup = await setupActions(t, { SEGMENT_MAX_ATTEMPTS: '10', SEGMENT_ATTEMPT_TIMEOUT_MS: '1000', SEGMENT_DEADLINE_MS: '2500' })
  setup.fake.respondWith(new Array<FakeStep>(10).fill({ hang: true }))
  const started = Date.now()
  const response = await setup.send('track-event', event)
  const elapsed = Date.now() - started
  const body = checkProblem(t, response, 503, { code: 'segment_unavailable' })
  t.match(response.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After set')
  t.ok((body.attempts as number) >= 1 && (body.attempts as number) <= 2, `stopped early (${String(body.attempts)} attempts)`)
  t.equal(setup.fake.requests.length, body.attempts, 'the answer counts every attempt made')
  t.ok(elapsed < 2500 + 5000, `returned within the deadline plus margin (${elapsed} ms)`)
})
