// The wire form of OAuth sources, checked against Segment's own Node library: @segment/analytics-node
// (with oauthSettings) and this service are pointed at twin fakes (a token server that verifies
// every assertion, and the fake Segment), and what each sent is compared field by field.
import { Analytics } from '@segment/analytics-node'
import t, { type Test } from 'tap'
import { build, createConnection, createWorkspace } from './helper.js'
import { callAction, fakeSegment } from './support/actions.js'
import { startFakeOAuth, type FakeOAuth, type TokenRequest } from './support/fake-oauth.js'
import type { FakeSegment, RecordedRequest } from './fake-segment.js'
import { CLIENT_ID, KEY_ID, OAUTH_WRITE_KEY, testKeys } from './support/oauth.js'
import type { TestContext } from './helper.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const event = { userId: 'user-1', event: 'Order Completed', properties: { revenue: 14.99, currency: 'EUR' } }

interface Twin { oauth: FakeOAuth, fake: FakeSegment }

async function twin (t: TestContext): Promise<Twin> {
  // The real clock on both sides: Segment's library reads Date.now().
  const oauth = await startFakeOAuth()
  t.teardown(async () => { await oauth.close() })
  oauth.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: testKeys().publicKey })
  return { oauth, fake: await fakeSegment(t) }
}

/**
 * Segment's library, flushing every event at once, one call after the other, against the twin.
 * (Called concurrently before it has a token, the library asks for one per call; the service
 * shares one request, see oauth-actions.test.ts.) Resolves to the delivery errors it reported.
 */
async function viaLibrary (side: Twin, calls: number): Promise<unknown[]> {
  const analytics = new Analytics({
    writeKey: OAUTH_WRITE_KEY,
    host: side.fake.url,
    flushAt: 1,
    maxRetries: 0,
    oauthSettings: { clientId: CLIENT_ID, clientKey: testKeys().privateKey, keyId: KEY_ID, authServer: side.oauth.url }
  })
  const errors: unknown[] = []
  analytics.on('error', (error) => errors.push(error))
  for (let i = 0; i < calls; i++) await new Promise<void>((resolve) => { analytics.track(event, () => resolve()) })
  await analytics.closeAndFlush({ timeout: 20_000 })
  return errors
}

/** This service, sending the same event as a one-item batch (the library always posts /v1/batch). */
async function viaService (t: TestContext, side: Twin, calls: number): Promise<void> {
  const { app } = await build(t, { SEGMENT_API_URL: side.fake.url, SEGMENT_OAUTH_URL: side.oauth.url })
  const workspace = await createWorkspace(app)
  const { id } = await createConnection(app, workspace, { writeKey: OAUTH_WRITE_KEY, oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: testKeys().privateKey } })
  for (let i = 0; i < calls; i++) {
    const response = await callAction(app, workspace, id, 'batch-send', { batch: [{ type: 'track', ...event }] })
    if (response.statusCode !== 200) throw new Error(`the service answered ${response.statusCode}: ${response.body}`)
  }
}

function compareTokenRequests (t: Test, library: TokenRequest, service: TokenRequest, authServers: { library: string, service: string }): void {
  t.equal(library.verdict, 'ok', 'the library\'s token request passes the fake')
  t.equal(service.verdict, 'ok', 'so does the service\'s')
  t.equal(service.method, library.method, 'method')
  t.equal(service.url, library.url, 'path')
  t.equal(service.headers['content-type'], library.headers['content-type'], 'content-type')
  t.same(Object.keys(service.form).sort(), Object.keys(library.form).sort(), 'form fields')
  for (const field of ['grant_type', 'client_assertion_type', 'scope']) t.equal(service.form[field], library.form[field], `form ${field}`)
  t.same(service.header, library.header, 'assertion header (alg, kid, typ)')
  const ours = service.claims as Record<string, unknown>
  const theirs = library.claims as Record<string, unknown>
  t.same(Object.keys(ours).sort(), Object.keys(theirs).sort(), 'claim names')
  for (const claim of ['iss', 'sub']) t.equal(ours[claim], theirs[claim], `claim ${claim}`)
  t.equal(theirs.aud, authServers.library, 'the library\'s aud: its authServer as configured')
  t.equal(ours.aud, authServers.service, 'the service\'s aud: its authServer as configured')
  t.equal((ours.exp as number) - (ours.iat as number), (theirs.exp as number) - (theirs.iat as number), 'exp - iat')
  const now = Math.floor(Date.now() / 1000)
  t.ok(Math.abs((ours.iat as number) - (theirs.iat as number)) <= 60 && (ours.iat as number) <= now, 'iat backdated alike')
  t.match(ours.jti, UUID, 'jti: a UUID, as the library\'s')
  t.match(theirs.jti, UUID)
}

function compareTrackingRequests (t: Test, library: RecordedRequest, service: RecordedRequest, libraryToken: string, serviceToken: string, { retry = false } = {}): void {
  t.equal(service.method, library.method, 'method')
  t.equal(service.url, library.url, 'path /v1/batch')
  t.equal(library.headers.authorization, `Bearer ${libraryToken}`, 'the library sends its token as Bearer')
  t.equal(service.headers.authorization, `Bearer ${serviceToken}`, 'so does the service')
  t.equal(service.headers['content-type'], library.headers['content-type'], 'content-type')
  if (!retry) t.equal(service.headers['x-retry-count'], library.headers['x-retry-count'], 'x-retry-count')
  const ours = service.body as Record<string, unknown>
  const theirs = library.body as Record<string, unknown>
  t.same(Object.keys(ours), Object.keys(theirs), 'body fields, in order: batch, writeKey, sentAt')
  t.equal(ours.writeKey, theirs.writeKey, 'writeKey in the body')
  t.equal(ours.writeKey, OAUTH_WRITE_KEY)
  t.equal(typeof ours.sentAt, typeof theirs.sentAt, 'sentAt')
  const [ourItem, theirItem] = [(ours.batch as Array<Record<string, unknown>>)[0]!, (theirs.batch as Array<Record<string, unknown>>)[0]!]
  for (const field of ['type', 'userId', 'event', 'properties']) t.same(ourItem[field], theirItem[field], `item ${field}`)
  t.equal(typeof ourItem.messageId, 'string', 'item messageId')
  t.same(Object.keys(ourItem.context as object), Object.keys(theirItem.context as object), 'item context: library only')
  // What the library adds of its own, and the service (by design/api.md) does not.
  t.same(Object.keys(theirItem).filter((key) => !(key in ourItem)).sort(), ['_metadata', 'integrations', 'timestamp'], 'the library\'s own additions, known and nothing else')
  t.same(Object.keys(ourItem).filter((key) => !(key in theirItem)), [], 'nothing the library does not send')
}

t.test('a token request and a Tracking API request, as Segment\'s library makes them', async (t) => {
  const library = await twin(t)
  const service = await twin(t)
  t.same(await viaLibrary(library, 2), [], 'the library delivered')
  await viaService(t, service, 2)
  for (const side of [library, service]) {
    t.equal(side.oauth.requests.length, 1, 'one token for two calls')
    t.equal(side.fake.requests.length, 2)
  }
  compareTokenRequests(t, library.oauth.requests[0]!, service.oauth.requests[0]!, { library: library.oauth.url, service: service.oauth.url })
  for (const i of [0, 1]) compareTrackingRequests(t, library.fake.requests[i]!, service.fake.requests[i]!, library.oauth.issued[0]!, service.oauth.issued[0]!)
})

t.test('a 401 from the Tracking API: the token is dropped and a new one fetched the same way', async (t) => {
  const library = await twin(t)
  const service = await twin(t)
  library.fake.respondWith([{ status: 401 }])
  service.fake.respondWith([{ status: 401 }])
  // The library (3.1) fails the batch on a 401 and clears its token, so its next batch fetches a
  // new one; the service (design/api.md) retries the call once, at once, with the new token.
  const errors = await viaLibrary(library, 2)
  t.equal(errors.length, 1, 'the library failed the first call')
  await viaService(t, service, 1)
  for (const [name, side] of [['library', library], ['service', service]] as const) {
    t.equal(side.oauth.requests.length, 2, `${name}: a second token after the 401`)
    t.equal(side.fake.requests.length, 2, `${name}: sent twice`)
    t.equal(side.fake.requests[0]!.headers.authorization, `Bearer ${side.oauth.issued[0]!}`)
    t.not(side.oauth.issued[0], side.oauth.issued[1])
  }
  compareTokenRequests(t, library.oauth.requests[1]!, service.oauth.requests[1]!, { library: library.oauth.url, service: service.oauth.url })
  compareTrackingRequests(t, library.fake.requests[1]!, service.fake.requests[1]!, library.oauth.issued[1]!, service.oauth.issued[1]!, { retry: true })
  t.equal(service.fake.requests[1]!.headers['x-retry-count'], '1', 'the service\'s second request is a retry')
  t.same((service.fake.requests[1]!.body as { batch: unknown[] }).batch, (service.fake.requests[0]!.body as { batch: unknown[] }).batch, 'of the same events')
})
