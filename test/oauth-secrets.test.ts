// Planted OAuth secrets (a fresh private key, the access tokens the fake token server issues, the
// client assertions the service signs) and the Write Key go through every OAuth path at
// LOG_LEVEL=trace, including servers that echo them back; afterwards none of them appears in an
// answer, a log line, the SQLite files, or the PostgreSQL database's files and WAL.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { build, createWorkspace, type TestApp } from './helper.js'
import { fakeSegment } from './support/actions.js'
import { findSecrets, readTree, secretForms, slicesOf } from './support/break.js'
import { ManualClock, oauthKeyPair } from './support/fake-oauth.js'
import { fakeOAuth } from './support/oauth.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'

const WRITE_KEY = `PLANTEDwk${randomBytes(16).toString('hex')}`
// Not a secret: stored in plain text, so the file searches must find it (they do read our data).
const NAME = `PLANTEDname${randomBytes(16).toString('hex')}`
const keys = oauthKeyPair()
const rotated = oauthKeyPair()

/** The spellings a PEM key can leak in: whole, each base64 line of its body, its DER as one base64 run, pieces of it. */
function pemForms (name: string, pem: string): Array<{ label: string, text: string }> {
  const lines = pem.trim().split('\n').filter((line) => !line.startsWith('-----'))
  const der = lines.join('')
  return [
    { label: name, text: pem.trim() },
    { label: `${name} as JSON`, text: JSON.stringify(pem.trim()).slice(1, 40) },
    { label: `${name} DER`, text: der },
    ...lines.filter((line) => line.length >= 24).map((line, i) => ({ label: `${name} line ${i}`, text: line })),
    // The key's body past its fixed ASN.1 header, in 24-character pieces.
    ...slicesOf(name, der.slice(64), 24).filter((_s, i) => i % 24 === 0)
  ]
}

function tokenForms (label: string, token: string): Array<{ label: string, text: string }> {
  return [...secretForms(label, token), ...slicesOf(label, token, 16).filter((_s, i) => i % 4 === 0)]
}

/** A JWS leaks whole, or by its signature (the part that makes it usable). */
function assertionForms (label: string, jws: string): Array<{ label: string, text: string }> {
  const signature = jws.split('.')[2] ?? jws
  return [{ label, text: jws }, { label: `${label} signature`, text: signature }, ...slicesOf(`${label} signature`, signature, 24).filter((_s, i) => i % 32 === 0)]
}

interface Answer { label: string, response: LightMyRequestResponse }

async function exercise (t: Test, env: Record<string, string>, store: 'sqlite' | 'postgres'): Promise<{ built: TestApp, answers: Answer[], tokens: string[], assertions: string[] }> {
  const clock = new ManualClock()
  const fake = await fakeSegment(t)
  const oauth = await fakeOAuth(t, clock)
  oauth.register({ clientId: 'app-1', keyId: 'key-1', publicKey: keys.publicKey })
  oauth.register({ clientId: 'app-1', keyId: 'key-2', publicKey: rotated.publicKey })
  const built = await build(t, { LOG_LEVEL: 'trace', SEGMENT_API_URL: fake.url, SEGMENT_OAUTH_URL: oauth.url, SEGMENT_MAX_ATTEMPTS: '2', SEGMENT_ATTEMPT_TIMEOUT_MS: '500', SEGMENT_DEADLINE_MS: '3000', ...env }, { clock: clock.now })
  const { app } = built
  const answers: Answer[] = []
  const call = async (label: string, options: InjectOptions): Promise<LightMyRequestResponse> => {
    const response = await app.inject(options)
    answers.push({ label, response })
    return response
  }
  const ws = await createWorkspace(app)
  const oauthBody = { clientId: 'app-1', keyId: 'key-1', privateKey: keys.privateKey }
  const created = await call('create', { method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: NAME, writeKey: WRITE_KEY, oauth: oauthBody } })
  t.equal(created.statusCode, 201, `${store}: created`)
  const id = created.json().id as string
  const track = async (label: string): Promise<LightMyRequestResponse> =>
    await call(label, { method: 'POST', url: `/v1/connections/${id}/actions/track-event`, headers: ws.auth, payload: { userId: 'u', event: 'e' } })

  await call('400 PKCS#1 key', { method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'c', writeKey: WRITE_KEY, oauth: { ...oauthBody, privateKey: keys.privateKey.replace('PRIVATE KEY', 'RSA PRIVATE KEY') } } })
  await call('400 extra field', { method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'c', writeKey: WRITE_KEY, oauth: { ...oauthBody, secret: keys.privateKey } } })
  await call('400 truncated JSON', { method: 'PUT', url: `/v1/connections/${id}/oauth`, headers: { ...ws.auth, 'content-type': 'application/json' }, payload: JSON.stringify(oauthBody).slice(0, -10) })
  await call('400 authServer', { method: 'PUT', url: `/v1/connections/${id}/oauth`, headers: ws.auth, payload: { ...oauthBody, authServer: 'http://127.0.0.1:1' } })
  await call('get', { method: 'GET', url: `/v1/connections/${id}`, headers: ws.auth })
  t.equal((await track('200')).statusCode, 200, `${store}: sent`)
  await track('200 cached')
  await call('dry run', { method: 'POST', url: `/v1/connections/${id}/actions/batch-send?dryRun=true`, headers: ws.auth, payload: { batch: [{ type: 'track', userId: 'u', event: 'e' }] } })

  // The Tracking API echoes the bearer token it refuses.
  fake.respondWith([{ status: 400, body: `bad token ${String(oauth.issued[0])} for ${WRITE_KEY}` }])
  t.equal((await track('502 echoed token')).statusCode, 502)
  fake.respondWith([{ status: 401, body: `expired ${String(oauth.issued[0])}` }, { status: 500, body: 'x' }])
  t.equal((await track('401 then 5xx')).statusCode, 503)
  // The token endpoint echoes the assertion and the whole form.
  clock.advance(86_400_000)
  oauth.respondWith([{ echoStatus: 401 }])
  t.equal((await track('502 echoed assertion')).statusCode, 502)
  oauth.respondWith([{ echoStatus: 503 }, { echoStatus: 500 }])
  t.equal((await track('503 echoing token endpoint')).statusCode, 503)
  oauth.respondWith([{ hang: true }, { hang: true }])
  t.equal((await track('503 token endpoint hangs')).statusCode, 503)
  oauth.respondWith([{ status: 200, body: { access_token: 42 } }])
  t.equal((await track('502 malformed token answer')).statusCode, 502)

  await call('rotate', { method: 'PUT', url: `/v1/connections/${id}/oauth`, headers: ws.auth, payload: { ...oauthBody, keyId: 'key-2', privateKey: rotated.privateKey } })
  t.equal((await track('200 after rotation')).statusCode, 200)
  const second = await call('create second', { method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'd', writeKey: WRITE_KEY, oauth: oauthBody } })
  await call('remove oauth', { method: 'DELETE', url: `/v1/connections/${id}/oauth`, headers: ws.auth })
  await track('200 basic again')
  await call('delete second', { method: 'DELETE', url: `/v1/connections/${second.json().id as string}`, headers: ws.auth })

  const tokens = [...oauth.issued]
  const assertions = oauth.requests.map((r) => r.form.client_assertion ?? '').filter((a) => a !== '')
  t.ok(tokens.length >= 3 && assertions.length >= 6, `${store}: ${tokens.length} tokens and ${assertions.length} assertions were made`)
  t.ok(fake.requests.some((r) => r.headers.authorization === `Bearer ${tokens[0]!}`), 'a token did reach the fake')
  // The forms are right: they are found where the secrets belong.
  t.ok(findSecrets(oauth.requests.map((r) => r.rawBody).join('\n'), assertions.flatMap((jws, i) => assertionForms(`assertion${i}`, jws))).length >= assertions.length * 2, 'the assertions are found in the token requests')
  t.ok(findSecrets(JSON.stringify(fake.requests.map((r) => r.headers)), tokens.slice(0, 1).flatMap((token) => tokenForms('token', token))).length > 0, 'the token is found in the Tracking API requests')
  t.ok(findSecrets(keys.privateKey, pemForms('privateKey', keys.privateKey)).length > 5, 'the key\'s forms are found in the key')
  return { built, answers, tokens, assertions }
}

function forms (tokens: string[], assertions: string[]): Array<{ label: string, text: string }> {
  return [
    ...secretForms('writeKey', WRITE_KEY),
    ...pemForms('privateKey', keys.privateKey),
    ...pemForms('rotatedKey', rotated.privateKey),
    ...tokens.flatMap((token, i) => tokenForms(`token${i}`, token)),
    ...assertions.flatMap((jws, i) => assertionForms(`assertion${i}`, jws))
  ]
}

function searchAnswersAndLogs (t: Test, logs: string[], answers: Answer[], all: Array<{ label: string, text: string }>): void {
  for (const { label, response } of answers) {
    t.same(findSecrets(`${response.statusCode}\n${JSON.stringify(response.headers)}\n${response.body}`, all), [], `answer "${label}" (${response.statusCode})`)
  }
  t.ok(logs.length > answers.length, `${logs.length} log lines at trace level`)
  for (const line of logs) {
    const found = findSecrets(line, all)
    if (found.length > 0) t.fail(`log line carries ${found.join(', ')}: ${line.slice(0, 300)}`)
  }
}

t.test('SQLite: answers, logs and database files', async (t) => {
  const { built, answers, tokens, assertions } = await exercise(t, {}, 'sqlite')
  const all = forms(tokens, assertions)
  searchAnswersAndLogs(t, built.logs, answers, all)
  t.ok(readTree(built.dir).some((f) => f.path.endsWith('-wal')), 'the WAL is searched while open')
  for (const { path, bytes } of readTree(built.dir)) t.same(findSecrets(bytes, all), [], `open: ${path.slice(built.dir.length)}`)
  await built.app.close()
  const closed = readTree(built.dir)
  for (const { path, bytes } of closed) t.same(findSecrets(bytes, all), [], `closed: ${path.slice(built.dir.length)}`)
  t.ok(closed.some(({ bytes }) => bytes.includes(NAME)), 'the files searched hold the connection (its plain-text name)')
})

t.test('PostgreSQL: answers, logs, the database\'s files and the WAL', { skip: postgresSkip }, async (t) => {
  const url = await freshPostgresUrl(t)
  const started = Date.now()
  const { built, answers, tokens, assertions } = await exercise(t, {
    DATABASE_URL: url,
    ENCRYPTION_KEYS: 'k1:' + randomBytes(32).toString('base64')
  }, 'postgres')
  const all = forms(tokens, assertions)
  searchAnswersAndLogs(t, built.logs, answers, all)
  await built.app.close()

  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const { rows } = await client.query<{ oid: number, rows: string, dir: string }>(`SELECT (SELECT oid FROM pg_database WHERE datname = current_database()) AS oid,
    (SELECT count(*) FROM connections WHERE oauth_private_key_sealed IS NOT NULL) AS rows, current_setting('data_directory') AS dir`)
  // The pages reach the data files at a checkpoint; the WAL has them already.
  await client.query('CHECKPOINT')
  await client.end()
  t.equal(rows[0]!.rows, '0', 'the second connection was deleted, the first\'s OAuth removed')
  // The tests run on the database's machine (PG_URL on loopback, or with-postgres.ts's own server).
  const PG_DATA = rows[0]!.dir
  const files = [
    ...readTree(join(PG_DATA, 'base', String(rows[0]!.oid))),
    // WAL segments written during this test (others' tests write there too; the planted values are unique).
    ...readdirSync(join(PG_DATA, 'pg_wal')).map((name) => join(PG_DATA, 'pg_wal', name))
      .filter((path) => statSync(path).isFile() && statSync(path).mtimeMs >= started - 1000)
      .map((path) => ({ path, bytes: readFileSync(path) }))
  ]
  t.ok(files.some((f) => f.path.includes('pg_wal')), 'WAL segments searched')
  t.ok(files.some((f) => !f.path.includes('pg_wal') && f.bytes.includes(NAME)), 'the data files searched hold the connection (its plain-text name)')
  t.ok(files.some((f) => f.path.includes('pg_wal') && f.bytes.includes(NAME)), 'and so does the WAL')
  let bytes = 0
  for (const file of files) {
    bytes += file.bytes.length
    const found = findSecrets(file.bytes, all)
    if (found.length > 0) t.fail(`${file.path} carries ${found.join(', ')}`)
  }
  t.pass(`${files.length} files, ${bytes} bytes searched`)
})
