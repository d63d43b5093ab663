// OAuthTokens on its own, against the fake token server: callers that give up, odd answers, a key
// that does not import, and a closed manager.
import t from 'tap'
import { AppError } from '../src/errors.js'
import { Cancel } from '../src/segment/client.js'
import { OAuthTokens, type OAuthSource } from '../src/segment/oauth.js'
import { ManualClock } from './support/fake-oauth.js'
import { CLIENT_ID, KEY_ID, fakeOAuth, testKeys } from './support/oauth.js'
import type { TestContext } from './helper.js'

async function setup (t: TestContext) {
  const clock = new ManualClock()
  const oauth = await fakeOAuth(t, clock)
  oauth.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: testKeys().publicKey })
  const tokens = new OAuthTokens({ maxAttempts: 2, attemptTimeoutMs: 2000, userAgent: 'test', now: clock.now, random: () => 0 })
  t.teardown(async () => { await tokens.close() })
  let opened = 0
  const source = (privateKey = testKeys().privateKey, connectionId = 'con_1'): OAuthSource => ({
    connectionId,
    clientId: CLIENT_ID,
    keyId: KEY_ID,
    authServer: oauth.url,
    sealed: Buffer.from(`sealed ${privateKey.length}`),
    privateKey: () => { opened++; return privateKey }
  })
  return { oauth, tokens, source, opened: () => opened }
}

const later = (): number => performance.now() + 10_000

t.test('a caller that gives up gets its own reason; the shared request goes on for the others', async (t) => {
  const { oauth, tokens, source } = await setup(t)
  oauth.respondWith([{ pass: true, delayMs: 100 }])
  const cancel = new Cancel()
  const signal = new AbortController()
  const leaving = tokens.token(source(), later(), cancel)
  const leavingToo = tokens.token(source(), later(), signal.signal)
  const staying = tokens.token(source(), later())
  cancel.abort(new Error('caller gone'))
  signal.abort(new Error('also gone'))
  await t.rejects(leaving, { message: 'caller gone' })
  await t.rejects(leavingToo, { message: 'also gone' })
  t.equal(await staying, oauth.issued[0])
  t.equal(oauth.requests.length, 1, 'one request for all three')
  t.equal(await tokens.token(source(), later(), new AbortController().signal), oauth.issued[0], 'a live signal gets the cached token')
  tokens.forget('con_1')
  await t.rejects(tokens.token(source(), later(), cancel), { message: 'caller gone' }, 'an aborted signal stops at once')
  await t.rejects(tokens.token(source(), later(), signal.signal), { message: 'also gone' })
  t.equal(await tokens.token(source(), later()), oauth.issued[1], 'the fetch they started anyway serves the next caller')
  t.equal(oauth.requests.length, 2)
})

t.test('drop() forgets only the token it names', async (t) => {
  const { oauth, tokens, source } = await setup(t)
  const first = await tokens.token(source(), later())
  tokens.drop('con_1', 'some-older-token')
  tokens.drop('con_unknown', first)
  t.equal(await tokens.token(source(), later()), first, 'still cached')
  tokens.drop('con_1', first)
  t.not(await tokens.token(source(), later()), first)
  t.equal(oauth.requests.length, 2)
})

t.test('answers that are not a token: segment_auth_failed, the body never quoted', async (t) => {
  const { oauth, tokens, source } = await setup(t)
  const bodies = [[1, 2], 'not json', { access_token: '', expires_in: 60 }, { access_token: 'x', expires_in: 0 }, { access_token: 'x', expires_in: '60' }, 'x'.repeat(70_000)]
  for (const body of bodies) {
    oauth.respondWith([{ status: 200, body }])
    const error = await tokens.token(source(), later()).catch((e: unknown) => e)
    t.ok(error instanceof AppError && error.code === 'segment_auth_failed', `${JSON.stringify(body).slice(0, 40)}: ${String((error as Error).message)}`)
  }
  oauth.respondWith([{ status: 400, body: 'e'.repeat(70_000) }])
  const refused = await tokens.token(source(), later()).catch((e: unknown) => e) as AppError
  t.equal(refused.code, 'segment_auth_failed')
  t.notOk('oauthError' in refused.extras, 'a body past the read limit gives no error code')
  t.equal(oauth.requests.length, bodies.length + 1, 'none retried')
})

t.test('a private key that does not import: the error, and the next fetch opens the key again', async (t) => {
  const { oauth, tokens, source, opened } = await setup(t)
  await t.rejects(tokens.token(source('not a key'), later()))
  await t.rejects(tokens.token(source('not a key'), later()))
  t.equal(opened(), 2, 'the failed import is not cached')
  t.equal(oauth.requests.length, 0, 'nothing was sent')
})

t.test('a closed manager refuses to fetch', async (t) => {
  const { tokens, source } = await setup(t)
  await tokens.close()
  await t.rejects(tokens.token(source(), later()), { message: 'OAuthTokens is closed' })
})

t.test('a deadline already spent is segment_timeout before any request', async (t) => {
  const { oauth, tokens, source } = await setup(t)
  await t.rejects(tokens.token(source(), performance.now() - 1), { code: 'segment_timeout' })
  t.equal(oauth.requests.length, 0)
})
