// OAuth sources end to end: the app, a fake token server that verifies every assertion, and the
// fake Segment, all on loopback. Token expiry runs on a clock the test moves, never on sleeps.
import t from 'tap'
import { REFRESH_MARGIN_MS } from '../src/segment/oauth.js'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { ADMIN_TOKEN, build, createConnection, createWorkspace } from './helper.js'
import { basicAuth, callAction, fakeSegment } from './support/actions.js'
import { ManualClock, oauthKeyPair } from './support/fake-oauth.js'
import { CLIENT_ID, KEY_ID, OAUTH_WRITE_KEY, bearer, fakeOAuth, setupOAuth, testKeys } from './support/oauth.js'
import { freePort } from './support/free-port.js'

const track = { userId: 'user-1', event: 'Order Completed', properties: { revenue: 14.99 } }

t.test('create and call: a verified token request, then Bearer and writeKey in the body', async (t) => {
  const { send, fake, oauth, app, workspace, connectionId } = await setupOAuth(t)
  const view = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}`, headers: workspace.auth })
  t.same(view.json().oauth, { clientId: CLIENT_ID, keyId: KEY_ID }, 'the connection shows clientId and keyId only')

  const response = await send('track-event', track)
  t.equal(response.statusCode, 200, response.body)
  t.match(response.json(), { status: 'accepted', attempts: 1, upstreamStatus: 200 })
  t.equal(oauth.requests.length, 1, 'one token request')
  t.equal(oauth.requests[0]!.verdict, 'ok', 'the fake verified signature and every claim')
  t.same(oauth.requests[0]!.header, { alg: 'RS256', kid: KEY_ID, typ: 'JWT' })
  t.match(oauth.requests[0]!.claims, { iss: CLIENT_ID, sub: CLIENT_ID, aud: oauth.url })
  t.equal(fake.requests.length, 1)
  const sent = fake.requests[0]!
  t.equal(sent.url, '/v1/track')
  t.equal(sent.headers.authorization, bearer(oauth.issued[0]), 'the issued token as Bearer')
  const body = sent.body as Record<string, unknown>
  t.equal(body.writeKey, OAUTH_WRITE_KEY, 'the Write Key in the body')
  t.equal(Buffer.byteLength(sent.rawBody), response.json().bytes, 'bytes counts the added writeKey')
  t.same(Object.keys(body).slice(-2), ['writeKey', 'sentAt'], 'writeKey just before sentAt')

  const batch = await send('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'e' }, { type: 'identify', userId: 'u' }] })
  t.equal(batch.statusCode, 200, batch.body)
  const batchBody = fake.requests[1]!.body as Record<string, unknown>
  t.same(Object.keys(batchBody), ['batch', 'writeKey', 'sentAt'], 'a batch body as Segment\'s library sends it')
  t.equal(batchBody.writeKey, OAUTH_WRITE_KEY)
  t.equal(fake.requests[1]!.headers.authorization, bearer(oauth.issued[0]), 'the cached token')
  t.equal(oauth.requests.length, 1, 'still one token request')
})

t.test('a token is cached across sequential calls and fetched once for concurrent ones', async (t) => {
  const { send, fake, oauth, app, workspace } = await setupOAuth(t)
  for (let i = 0; i < 5; i++) t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 1, 'five calls, one token')
  t.ok(fake.requests.every((r) => r.headers.authorization === bearer(oauth.issued[0])))

  // A second OAuth connection, no token yet: 25 calls at once while the token server takes its time.
  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: testKeys().privateKey } })
  oauth.respondWith([{ pass: true, delayMs: 150 }])
  const answers = await Promise.all(Array.from({ length: 25 }, async () => await send('track-event', track, { connectionId: id })))
  t.same(answers.map((a) => a.statusCode), answers.map(() => 200))
  t.equal(oauth.requests.length, 2, 'one token request for 25 concurrent callers')
  // Coalescing may join them into fewer requests: count the events each request carried.
  const carried = fake.requests.filter((r) => r.headers.authorization === bearer(oauth.issued[1]))
    .map((r) => r.url === '/v1/batch' ? (r.body as { batch: unknown[] }).batch.length : 1)
  t.equal(carried.reduce((a, b) => a + b, 0), 25, 'all 25 carried the new token')
  t.ok(carried.length <= 25)
})

t.test('a token is replaced shortly before it expires', async (t) => {
  const { send, fake, oauth, clock } = await setupOAuth(t)
  oauth.expiresIn = 3600
  t.equal((await send('track-event', track)).statusCode, 200)
  clock.advance(3600_000 - REFRESH_MARGIN_MS - 1000)
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 1, 'still cached just before the margin')
  clock.advance(2000)
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 2, 'refreshed inside the margin, before expiry')
  t.equal(oauth.requests[1]!.verdict, 'ok', 'the new assertion carries the moved clock\'s times')
  t.equal(fake.requests[2]!.headers.authorization, bearer(oauth.issued[1]))

  // A short-lived token is refreshed at half its lifetime.
  oauth.expiresIn = 10
  clock.advance(3600_000)
  t.equal((await send('track-event', track)).statusCode, 200)
  clock.advance(4000)
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 3, 'a 10 s token is kept for 5 s')
  clock.advance(1500)
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 4, 'and replaced after')
})

t.test('401 and 403 from the Tracking API: the token is dropped and the call retried once with a new one', async (t) => {
  const { send, fake, oauth } = await setupOAuth(t)
  fake.respondWith([{ status: 401, body: 'token revoked' }])
  const first = await send('track-event', track)
  t.equal(first.statusCode, 200, first.body)
  t.match(first.json(), { attempts: 2, upstreamStatus: 200 })
  t.equal(oauth.requests.length, 2, 'a new token after the 401')
  t.equal(fake.requests[0]!.headers.authorization, bearer(oauth.issued[0]))
  t.equal(fake.requests[1]!.headers.authorization, bearer(oauth.issued[1]))
  t.equal(fake.requests[1]!.headers['x-retry-count'], '1')
  t.same((fake.requests[1]!.body as { messageId: string }).messageId, (fake.requests[0]!.body as { messageId: string }).messageId, 'same messageId')

  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 2, 'the new token is cached')

  fake.respondWith([{ status: 403 }, { status: 403, body: 'still no' }])
  const refused = await send('track-event', track)
  t.equal(refused.statusCode, 502, 'a second refusal is final')
  t.match(refused.json(), { code: 'segment_rejected', upstreamStatus: 403, attempts: 2 })
  t.equal(oauth.requests.length, 3, 'one retry only: one more token, and the second refused one dropped')
  t.equal(fake.requests.length, 5)

  const after = await send('track-event', track)
  t.equal(after.statusCode, 200)
  t.equal(oauth.requests.length, 4, 'the refused token is not reused')
  t.equal(fake.requests.at(-1)!.headers.authorization, bearer(oauth.issued[3]))
})

t.test('511: retried with a fresh token for an OAuth source, final for a Write Key connection', async (t) => {
  const { send, fake, oauth, app, workspace } = await setupOAuth(t)
  fake.respondWith([{ status: 511 }])
  const oauthAnswer = await send('track-event', track)
  t.equal(oauthAnswer.statusCode, 200, oauthAnswer.body)
  t.equal(oauth.requests.length, 2)
  t.equal(fake.requests[1]!.headers.authorization, bearer(oauth.issued[1]))

  const { id } = await createConnection(app, workspace, { writeKey: 'wk_basic_0123456789' })
  fake.respondWith([{ status: 511 }])
  const basicAnswer = await send('track-event', track, { connectionId: id })
  t.equal(basicAnswer.statusCode, 502)
  t.match(basicAnswer.json(), { code: 'segment_rejected', upstreamStatus: 511, attempts: 1 })
  t.equal(fake.requests.at(-1)!.headers.authorization, basicAuth('wk_basic_0123456789'))
  t.notOk('writeKey' in (fake.requests.at(-1)!.body as object), 'no writeKey in a Basic body')
})

t.test('a refused assertion is 502 segment_auth_failed with the endpoint\'s error code; nothing is sent', async (t) => {
  const { send, fake, oauth, app, workspace } = await setupOAuth(t)
  // Registered under KEY_ID is the shared test key; this connection signs with another one.
  const other = oauthKeyPair()
  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: other.privateKey } })
  const response = await send('track-event', track, { connectionId: id })
  t.equal(response.statusCode, 502)
  t.match(response.json(), { code: 'segment_auth_failed', oauthError: 'invalid_client', upstreamStatus: 401 })
  t.match(oauth.requests[0]!.verdict, /signature/, 'the fake refused the signature')
  t.equal(oauth.requests.length, 1, 'not retried')
  t.equal(fake.requests.length, 0, 'nothing sent to Segment')

  oauth.respondWith([{ status: 400, body: { error: 'invalid_scope', error_description: 'nope' } }])
  const scope = await send('track-event', track)
  t.match(scope.json(), { status: 502, code: 'segment_auth_failed', oauthError: 'invalid_scope', upstreamStatus: 400 })
  t.notOk('error_description' in scope.json() || scope.body.includes('nope'), 'the description is not passed on')

  oauth.respondWith([{ status: 401, body: { error: 'bad "code" \\ here' } }])
  const odd = await send('track-event', track)
  t.equal(odd.json().code, 'segment_auth_failed')
  t.notOk('oauthError' in odd.json(), 'an error that is not an RFC 6749 code is left out')
  t.equal(fake.requests.length, 0)
})

t.test('token endpoint 429, 5xx and resets are retried within the deadline; past it, 503', async (t) => {
  const { send, fake, oauth } = await setupOAuth(t, { SEGMENT_MAX_ATTEMPTS: '4' })
  oauth.respondWith([{ status: 503 }, { status: 429, headers: { 'retry-after': '0' } }, { reset: true }])
  const response = await send('track-event', track)
  t.equal(response.statusCode, 200, response.body)
  t.equal(oauth.requests.length, 4)
  t.equal(new Set(oauth.requests.map((r) => (r.claims as { jti: string }).jti)).size, 4, 'every token request has a fresh jti')
  t.equal(fake.requests[0]!.headers.authorization, bearer(oauth.issued[0]))

  const fresh = await setupOAuth(t, { SEGMENT_MAX_ATTEMPTS: '2' })
  fresh.oauth.respondWith([{ status: 500 }, { status: 502 }])
  const down = await fresh.send('track-event', track)
  t.equal(down.statusCode, 503)
  t.match(down.json(), { code: 'segment_unavailable', upstreamStatus: 502 })
  t.ok(down.headers['retry-after'], 'Retry-After set')
  t.equal(fresh.fake.requests.length, 0)

  const slow = await setupOAuth(t, { SEGMENT_ATTEMPT_TIMEOUT_MS: '5000', SEGMENT_DEADLINE_MS: '300' })
  slow.oauth.respondWith([{ hang: true }])
  const timedOut = await slow.send('track-event', track)
  t.equal(timedOut.statusCode, 504)
  t.equal(timedOut.json().code, 'segment_timeout')
})

t.test('a token server whose clock is 10 minutes behind: refused once, then assertions on its clock', async (t) => {
  const appClock = new ManualClock()
  const serverClock = new ManualClock(appClock.now() - 600_000)
  const fake = await fakeSegment(t)
  const oauth = await fakeOAuth(t, serverClock)
  oauth.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: testKeys().publicKey })
  const { app } = await build(t, { SEGMENT_API_URL: fake.url, SEGMENT_OAUTH_URL: oauth.url }, { clock: appClock.now })
  const workspace = await createWorkspace(app)
  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: testKeys().privateKey } })
  const response = await callAction(app, workspace, id, 'track-event', track)
  t.equal(response.statusCode, 200, response.body)
  t.same(oauth.requests.map((r) => r.verdict), ['Token used before issued', 'ok'], 'refused, then retried at once on the server\'s clock')
  app.oauth.forget(id)
  t.equal((await callAction(app, workspace, id, 'track-event', track)).statusCode, 200)
  t.same(oauth.requests.map((r) => r.verdict), ['Token used before issued', 'ok', 'ok'], 'the next assertion is right the first time')
})

t.test('an unreachable token server is 503 segment_unavailable', async (t) => {
  const port = await freePort()
  const { send, fake } = await setupOAuth(t, { SEGMENT_OAUTH_URL: `http://127.0.0.1:${port}`, SEGMENT_MAX_ATTEMPTS: '2' })
  const response = await send('track-event', track)
  t.equal(response.statusCode, 503)
  t.match(response.json(), { code: 'segment_unavailable', detail: /token endpoint/ })
  t.equal(fake.requests.length, 0)
})

t.test('rotation: the very next call uses the new key and a new token; removal goes back to Basic', async (t) => {
  const { send, fake, oauth, app, workspace, connectionId } = await setupOAuth(t)
  t.equal((await send('track-event', track)).statusCode, 200)
  const rotated = oauthKeyPair()
  oauth.register({ clientId: CLIENT_ID, keyId: 'key_rotated', publicKey: rotated.publicKey })
  const put = await app.inject({
    method: 'PUT',
    url: `/v1/connections/${connectionId}/oauth`,
    headers: workspace.auth,
    payload: { clientId: CLIENT_ID, keyId: 'key_rotated', privateKey: rotated.privateKey }
  })
  t.equal(put.statusCode, 200, put.body)
  t.same(put.json().oauth, { clientId: CLIENT_ID, keyId: 'key_rotated' })
  oauth.revoke(KEY_ID)
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 2, 'a new token at once')
  t.equal(oauth.requests[1]!.header?.kid, 'key_rotated')
  t.equal(fake.requests[1]!.headers.authorization, bearer(oauth.issued[1]))

  // The same credentials put again still retire the cached token.
  await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/oauth`, headers: workspace.auth, payload: { clientId: CLIENT_ID, keyId: 'key_rotated', privateKey: rotated.privateKey } })
  t.equal((await send('track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 3)

  const removed = await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}/oauth`, headers: workspace.auth })
  t.equal(removed.statusCode, 200)
  t.notOk('oauth' in removed.json())
  t.equal((await send('track-event', track)).statusCode, 200)
  const last = fake.requests.at(-1)!
  t.equal(last.headers.authorization, basicAuth(OAUTH_WRITE_KEY), 'Basic again')
  t.notOk('writeKey' in (last.body as object), 'no writeKey in the body')
  t.equal(oauth.requests.length, 3, 'no token request')
})

t.test('a rotation on one replica retires the token another replica cached', async (t) => {
  const { send, fake, oauth, app, dbPath, workspace, connectionId, config, clock } = await setupOAuth(t)
  // A second replica on the same database (same key ring, from the SQLite folder's key file).
  const other = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, SEGMENT_API_URL: config.segment.baseUrls.us, SEGMENT_OAUTH_URL: oauth.url, LOG_LEVEL: 'silent' }), { clock: clock.now })
  t.teardown(async () => { await other.close() })
  t.equal((await callAction(other, workspace, connectionId, 'track-event', track)).statusCode, 200)
  t.equal((await callAction(other, workspace, connectionId, 'track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 1, 'the other replica caches its token')
  const rotated = oauthKeyPair()
  oauth.register({ clientId: CLIENT_ID, keyId: 'key_rotated', publicKey: rotated.publicKey })
  const put = await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/oauth`, headers: workspace.auth, payload: { clientId: CLIENT_ID, keyId: 'key_rotated', privateKey: rotated.privateKey } })
  t.equal(put.statusCode, 200)
  t.equal((await callAction(other, workspace, connectionId, 'track-event', track)).statusCode, 200)
  t.equal(oauth.requests.length, 2, 'the very next action there fetched a new token')
  t.equal(oauth.requests[1]!.header?.kid, 'key_rotated', 'signed with the new key')
  t.equal(fake.requests.at(-1)!.headers.authorization, bearer(oauth.issued[1]))
  t.equal((await send('track-event', track)).statusCode, 200, 'and this replica too')
})

t.test('EU region: the EU token server, its URL as aud, and the EU Tracking API', async (t) => {
  const clock = new ManualClock()
  const usFake = await fakeSegment(t)
  const euFake = await fakeSegment(t)
  const usOAuth = await fakeOAuth(t, clock)
  const euOAuth = await fakeOAuth(t, clock)
  const keys = testKeys()
  for (const server of [usOAuth, euOAuth]) server.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: keys.publicKey })
  const { app } = await build(t, { SEGMENT_API_URL: usFake.url, SEGMENT_EU_API_URL: euFake.url, SEGMENT_OAUTH_URL: usOAuth.url, SEGMENT_EU_OAUTH_URL: euOAuth.url }, { clock: clock.now })
  const workspace = await createWorkspace(app)
  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, region: 'eu', oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: keys.privateKey } })
  const response = await callAction(app, workspace, id, 'track-event', track)
  t.equal(response.statusCode, 200, response.body)
  t.equal(usOAuth.requests.length, 0)
  t.equal(euOAuth.requests.length, 1)
  t.equal(euOAuth.requests[0]!.verdict, 'ok')
  t.equal((euOAuth.requests[0]!.claims as { aud: string }).aud, euOAuth.url)
  t.equal(usFake.requests.length, 0)
  t.equal(euFake.requests[0]!.headers.authorization, bearer(euOAuth.issued[0]))
})

t.test('a custom authServer only from SEGMENT_ALLOWED_ENDPOINTS', async (t) => {
  const clock = new ManualClock()
  const custom = await fakeOAuth(t, clock)
  custom.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: testKeys().publicKey })
  const { send, app, workspace, oauth, fake, dbPath, config } = await setupOAuth(t, { SEGMENT_ALLOWED_ENDPOINTS: custom.url })
  const oauthBody = { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: testKeys().privateKey }

  const refused = await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'x', writeKey: OAUTH_WRITE_KEY, oauth: { ...oauthBody, authServer: 'http://127.0.0.1:1' } } })
  t.equal(refused.statusCode, 400)
  t.match(refused.json(), { code: 'endpoint_not_allowed', errors: [{ path: '/oauth/authServer' }] })
  const refusedPut = await app.inject({ method: 'PUT', url: `/v1/connections/${(await createConnection(app, workspace)).id}/oauth`, headers: workspace.auth, payload: { ...oauthBody, authServer: `${custom.url}@evil.example` } })
  t.match(refusedPut.json(), { status: 400, code: 'endpoint_not_allowed', errors: [{ path: '/authServer' }] })

  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, oauth: { ...oauthBody, authServer: custom.url } })
  clock.advance(1)
  const response = await send('track-event', track, { connectionId: id })
  t.equal(response.statusCode, 200, response.body)
  t.equal(oauth.requests.length, 0, 'not the region\'s server')
  t.equal(custom.requests.length, 1)
  t.equal((custom.requests[0]!.claims as { aud: string }).aud, custom.url, 'aud is the custom server')
  t.equal(fake.requests[0]!.headers.authorization, bearer(custom.issued[0]))

  // The operator drops it from the allowlist: the stored connection no longer sends.
  await app.close()
  const again = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, SEGMENT_API_URL: config.segment.baseUrls.us, SEGMENT_OAUTH_URL: oauth.url, LOG_LEVEL: 'silent', ADMIN_TOKEN }))
  t.teardown(async () => { await again.close() })
  const blocked = await callAction(again, workspace, id, 'track-event', track)
  t.equal(blocked.statusCode, 400)
  t.equal(blocked.json().code, 'endpoint_not_allowed')
  t.equal(custom.requests.length, 1, 'no token request to a server no longer allowed')
})

t.test('the limits count the added writeKey', async (t) => {
  const { send, app, workspace } = await setupOAuth(t)
  const { id: basicId } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY })
  const event = { userId: 'u', event: 'e', messageId: 'm-1', context: { library: { name: 'x', version: '1' } } }
  const withKey = (await send('track-event', event, { query: 'dryRun=true' })).json().bytes as number
  const without = (await send('track-event', event, { query: 'dryRun=true', connectionId: basicId })).json().bytes as number
  t.equal(withKey - without, `,"writeKey":${JSON.stringify(OAUTH_WRITE_KEY)}`.length)

  const limited = await setupOAuth(t, { SEGMENT_MAX_EVENT_BYTES: String(withKey) })
  t.equal((await limited.send('track-event', event, { query: 'dryRun=true' })).statusCode, 200, 'exactly at the limit')
  const over = await limited.send('track-event', { ...event, messageId: 'm-12' }, { query: 'dryRun=true' })
  t.equal(over.statusCode, 413)
  t.match(over.json(), { limit: withKey, size: withKey + 1 })

  const batch = { batch: [{ type: 'track', userId: 'u', event: 'e', messageId: 'b-1' }], context: { library: { name: 'x', version: '1' } } }
  const batchBytes = (await send('batch-send', batch, { query: 'dryRun=true' })).json().bytes as number
  const basicBatchBytes = (await send('batch-send', batch, { query: 'dryRun=true', connectionId: basicId })).json().bytes as number
  t.equal(batchBytes - basicBatchBytes, `,"writeKey":${JSON.stringify(OAUTH_WRITE_KEY)}`.length, 'in a batch body too')
})

t.test('coalesced: calls joined while a request is in flight share one /v1/batch with Bearer and a top-level writeKey', async (t) => {
  const { send, fake, oauth } = await setupOAuth(t, { SEGMENT_ATTEMPT_TIMEOUT_MS: '60000', SEGMENT_DEADLINE_MS: '120000' })
  let open = (): void => {}
  fake.respondWith([{ until: new Promise((resolve) => { open = () => { resolve(undefined) } }) }])
  const first = send('track-event', { ...track, userId: 'first' })
  await fake.waitForRequests(1)
  const joined = Array.from({ length: 4 }, async (_, i) => await send('track-event', { ...track, userId: `joined-${i}` }))
  // The four wait for the held request: the next one to go out carries all of them.
  await new Promise((resolve) => setTimeout(resolve, 200))
  open()
  t.equal((await first).statusCode, 200)
  const answers = await Promise.all(joined)
  t.same(answers.map((a) => a.statusCode), [200, 200, 200, 200])
  const batches = fake.requests.filter((r) => r.url === '/v1/batch')
  t.ok(batches.length >= 1, 'the waiting calls went together')
  for (const request of fake.requests) t.equal(request.headers.authorization, bearer(oauth.issued[0]), `${request.url}: the one token`)
  for (const request of batches) {
    const body = request.body as { batch: Array<Record<string, unknown>>, writeKey?: string }
    t.same(Object.keys(body), ['batch', 'writeKey', 'sentAt'], 'a joined body as Segment\'s library sends a batch')
    t.equal(body.writeKey, OAUTH_WRITE_KEY)
    t.ok(body.batch.every((item) => !('writeKey' in item)), 'no item carries the Write Key')
  }
  const ids = fake.requests.flatMap((r) => r.url === '/v1/batch' ? (r.body as { batch: Array<{ messageId: string }> }).batch.map((i) => i.messageId) : [(r.body as { messageId: string }).messageId])
  t.same(new Set(ids).size, 5, 'every messageId exactly once')
  t.equal(oauth.requests.length, 1, 'one token request')
})

t.test('queued: an OAuth source\'s queued events are delivered with Bearer and a top-level writeKey only', async (t) => {
  const { send, fake, oauth, app, workspace, connectionId } = await setupOAuth(t, { DELIVERY_LEASE_MS: '3000', DELIVERY_BACKOFF_MAX_MS: '40' })
  const accepted = await Promise.all([1, 2, 3].map(async (i) => await send('track-event', { ...track, userId: `q-${i}` }, { headers: { prefer: 'respond-async' } })))
  t.same(accepted.map((a) => a.statusCode), [202, 202, 202])
  for (const answer of accepted) {
    const { deliveryId } = answer.json<{ deliveryId: string }>()
    for (let state = ''; state !== 'delivered';) {
      const delivery = await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries/${deliveryId}`, headers: workspace.auth })
      state = delivery.json<{ state: string }>().state
      t.not(state, 'failed', 'not a dead letter')
      if (state === 'failed') return
      if (state !== 'delivered') await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const sent = fake.requests.filter((r) => r.url === '/v1/batch')
  t.ok(sent.length >= 1)
  const items: Array<Record<string, unknown>> = []
  for (const request of sent) {
    t.equal(request.headers.authorization, bearer(oauth.issued[0]), 'the token, not Basic')
    const body = request.body as { batch: Array<Record<string, unknown>>, writeKey?: string }
    t.equal(body.writeKey, OAUTH_WRITE_KEY, 'the Write Key at the top level')
    items.push(...body.batch)
  }
  t.same(items.map((item) => item.userId).sort(), ['q-1', 'q-2', 'q-3'])
  t.ok(items.every((item) => !('writeKey' in item) && item.type === 'track'), 'items carry no Write Key of their own')
})
