import t from 'tap'
import { build, createConnection, createWorkspace } from './helper.js'

t.test('the workspace rate limit answers 429 rate_limited with Retry-After, per workspace', async (t) => {
  const { app } = await build(t, { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  const a = await createWorkspace(app, 'A')
  const b = await createWorkspace(app, 'B')
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ method: 'GET', url: '/v1/connections', headers: a.auth })).statusCode, 200)
  }
  const limited = await app.inject({ method: 'GET', url: '/v1/connections', headers: a.auth })
  t.equal(limited.statusCode, 429)
  t.match(limited.headers['content-type'], /application\/problem\+json/)
  t.match(limited.json(), { status: 429, code: 'rate_limited', title: 'Too many requests' })
  t.ok(Number(limited.headers['retry-after']) >= 1 && Number(limited.headers['retry-after']) <= 60, `Retry-After ${String(limited.headers['retry-after'])}`)
  t.equal((await app.inject({ method: 'GET', url: '/v1/connections', headers: b.auth })).statusCode, 200, 'another workspace has its own budget')
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'probes are not budgeted')
  const unauthenticated = await app.inject({ method: 'GET', url: '/v1/connections' })
  t.equal(unauthenticated.statusCode, 401, 'authentication comes first')
})

t.test('invalid requests spend the budget too: it is counted before the body is read', async (t) => {
  // Four: the connection's creation is the first request of the budget.
  const { app } = await build(t, { RATE_LIMIT_MAX: '4', RATE_LIMIT_WINDOW_MS: '60000' })
  const ws = await createWorkspace(app)
  const connection = await createConnection(app, ws)
  const url = `/v1/connections/${connection.id}/actions/track-event?dryRun=true`
  t.equal((await app.inject({ method: 'POST', url, headers: ws.auth, payload: { userId: 'u1' } })).statusCode, 400, 'schema violation')
  t.equal((await app.inject({ method: 'POST', url, headers: { ...ws.auth, 'content-type': 'application/json' }, payload: '{not json' })).statusCode, 400, 'malformed JSON')
  t.equal((await app.inject({ method: 'POST', url, headers: { ...ws.auth, 'content-type': 'text/plain' }, payload: 'hello' })).statusCode, 415, 'wrong media type')
  const limited = await app.inject({ method: 'POST', url, headers: ws.auth, payload: { userId: 'u1', event: 'E' } })
  t.equal(limited.statusCode, 429, 'a valid request after three invalid ones finds the budget spent')
  t.match(limited.json(), { code: 'rate_limited' })
})

t.test('RATE_LIMIT_MAX=0 disables the budget', async (t) => {
  const { app } = await build(t, { RATE_LIMIT_MAX: '0' })
  const ws = await createWorkspace(app)
  await createConnection(app, ws)
  for (let i = 0; i < 20; i++) {
    t.equal((await app.inject({ method: 'GET', url: '/v1/connections', headers: ws.auth })).statusCode, 200)
  }
})

t.test('under pressure the API answers 503 overloaded with Retry-After; probes still answer', async (t) => {
  const { app } = await build(t, { PRESSURE_MAX_HEAP_BYTES: '1' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  // under-pressure samples memory periodically; wait until it has seen the heap.
  let response = await app.inject({ method: 'GET', url: '/v1/admin/workspaces' })
  for (let i = 0; i < 50 && response.statusCode !== 503; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    response = await app.inject({ method: 'GET', url: '/v1/admin/workspaces' })
  }
  t.equal(response.statusCode, 503)
  t.match(response.headers['content-type'], /application\/problem\+json/)
  t.match(response.json(), { status: 503, code: 'overloaded' })
  t.equal(response.headers['retry-after'], '5')
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
})
