// Planted secrets (Write Keys, a documentation-only password, workspace tokens and ADMIN_TOKEN) go
// through every route and every failure path at LOG_LEVEL=trace; afterwards none of them, nor the
// base64 a Basic header carries, appears in any log line, answer (body or header), the /metrics
// text, or any file the app wrote (SQLite database, -wal, -shm, key file), as UTF-8 or UTF-16LE.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { build } from './helper.js'
import { fakeSegment } from './support/actions.js'
import { STEADY_ENV, basic, findSecrets, readTree, secretForms, slicesOf } from './support/break.js'

const plant = (prefix: string): string => `${prefix}${randomBytes(16).toString('hex')}`
// 41 characters: not a multiple of 3, so base64(key) is not a piece of base64(key + ':').
const WRITE_KEY = plant('PLANTEDwk')
const ROTATED_KEY = plant('PLANTEDrk')
const PASSWORD = plant('PLANTEDpw')
const ADMIN = plant('PLANTEDadmin')

interface Answer { label: string, response: LightMyRequestResponse, issues?: string }

function answerText (response: LightMyRequestResponse): string {
  return `${response.statusCode}\n${JSON.stringify(response.headers)}\n${response.body}`
}

t.test('no secret in logs, answers, metrics or files, on any path', async (t) => {
  const fake = await fakeSegment(t)
  const env = {
    LOG_LEVEL: 'trace',
    ADMIN_TOKEN: ADMIN,
    SEGMENT_API_URL: fake.url,
    SEGMENT_EU_API_URL: fake.url,
    SEGMENT_MAX_ATTEMPTS: '2',
    SEGMENT_ATTEMPT_TIMEOUT_MS: '2000',
    SEGMENT_DEADLINE_MS: '400',
    SEGMENT_MAX_EVENT_BYTES: '2000',
    ...STEADY_ENV
  }
  const main = await build(t, env)
  // A second app whose budget is 3 requests, for the 429 path.
  const limited = await build(t, { ...env, RATE_LIMIT_MAX: '3' })
  const answers: Answer[] = []
  const admin = { authorization: `Bearer ${ADMIN}` }

  async function call (app: FastifyInstance, label: string, options: InjectOptions, issues?: string): Promise<LightMyRequestResponse> {
    const response = await app.inject(options)
    answers.push({ label, response, ...(issues === undefined ? {} : { issues }) })
    return response
  }

  const { app } = main
  // Admin: workspaces and tokens (the issuing answers carry their own token, by design).
  const created = await call(app, 'create workspace', { method: 'POST', url: '/v1/admin/workspaces', headers: admin, payload: { name: 'Agency' } }, 'token')
  const workspace = { id: created.json().id as string, token: created.json().token as string }
  const auth = { authorization: `Bearer ${workspace.token}` }
  const second = await call(app, 'issue token', { method: 'POST', url: `/v1/admin/workspaces/${workspace.id}/tokens`, headers: admin }, 'token')
  const secondToken = second.json().token as string
  await call(app, 'use second token', { method: 'GET', url: '/v1/connections', headers: { authorization: `Bearer ${secondToken}` } })
  await call(app, 'revoke token', { method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${second.json().id as string}`, headers: admin })
  await call(app, 'revoked token', { method: 'GET', url: '/v1/connections', headers: { authorization: `Bearer ${secondToken}` } })
  await call(app, 'revoke again', { method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${second.json().id as string}`, headers: admin })
  await call(app, 'list workspaces', { method: 'GET', url: '/v1/admin/workspaces', headers: admin })
  await call(app, 'token for unknown workspace', { method: 'POST', url: '/v1/admin/workspaces/ws_nope/tokens', headers: admin })
  await call(app, 'bad workspace body', { method: 'POST', url: '/v1/admin/workspaces', headers: { ...admin, 'content-type': 'application/json' }, payload: `{"name":"${ADMIN}",` })

  // 401: every credential in the wrong place, or nearly right.
  const wrong: Record<string, Record<string, string>> = {
    'admin token on a workspace route': { authorization: `Bearer ${ADMIN}` },
    'workspace token on an admin route': auth,
    'near-miss workspace token': { authorization: `Bearer ${workspace.token.slice(0, -1)}${workspace.token.endsWith('A') ? 'B' : 'A'}` },
    'workspace token as Basic': { authorization: `Basic ${basic(workspace.token)}` },
    'write key as Bearer': { authorization: `Bearer ${WRITE_KEY}` },
    'write key as Basic': { authorization: `Basic ${basic(WRITE_KEY)}` },
    'admin token lower-case scheme': { authorization: `bearer ${ADMIN}x` }
  }
  for (const [label, headers] of Object.entries(wrong)) {
    await call(app, `401 ${label}`, { method: 'GET', url: '/v1/connections', headers })
    await call(app, `401 admin ${label}`, { method: 'GET', url: '/v1/admin/workspaces', headers })
  }

  // Connections: create (with the documentation-only password), read, and every refusal.
  const connection = await call(app, 'create connection', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'Client', writeKey: WRITE_KEY, password: PASSWORD } })
  const id = connection.json().id as string
  await call(app, '400 key with a space', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'x', writeKey: `${WRITE_KEY} x`, password: PASSWORD } })
  await call(app, '400 key with a colon', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'x', writeKey: `${WRITE_KEY}:${PASSWORD}` } })
  await call(app, '400 unknown field', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'x', writeKey: WRITE_KEY, extra: PASSWORD } })
  await call(app, '400 truncated JSON', { method: 'POST', url: '/v1/connections', headers: { ...auth, 'content-type': 'application/json' }, payload: `{"name":"x","writeKey":"${WRITE_KEY}","password":"${PASSWORD}` })
  await call(app, '400 poisoned JSON', { method: 'POST', url: '/v1/connections', headers: { ...auth, 'content-type': 'application/json' }, payload: `{"name":"x","writeKey":"${WRITE_KEY}","__proto__":{"x":"${PASSWORD}"}}` })
  await call(app, '400 endpoint', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'x', writeKey: WRITE_KEY, endpoint: `http://${WRITE_KEY}@127.0.0.1:1` } })
  await call(app, '413 body', { method: 'POST', url: '/v1/connections', headers: auth, payload: { name: 'x'.repeat(70_000), writeKey: WRITE_KEY, password: PASSWORD } })
  await call(app, '415 form', { method: 'POST', url: '/v1/connections', headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, payload: `writeKey=${WRITE_KEY}` })
  await call(app, 'get', { method: 'GET', url: `/v1/connections/${id}`, headers: auth })
  await call(app, 'list', { method: 'GET', url: '/v1/connections', headers: auth })
  await call(app, 'patch', { method: 'PATCH', url: `/v1/connections/${id}`, headers: auth, payload: { name: 'Client (renamed)' } })
  await call(app, '404 get', { method: 'GET', url: '/v1/connections/con_nope', headers: auth })
  await call(app, '404 rotate', { method: 'PUT', url: '/v1/connections/con_nope/write-key', headers: auth, payload: { writeKey: ROTATED_KEY, password: PASSWORD } })
  await call(app, '400 rotate', { method: 'PUT', url: `/v1/connections/${id}/write-key`, headers: auth, payload: { writeKey: `${ROTATED_KEY}\n` } })

  // Actions: success, dry run, refusals, and every upstream failure.
  const track = (label: string, payload: unknown, query = '', headers: Record<string, string> = {}) =>
    call(app, label, { method: 'POST', url: `/v1/connections/${id}/actions/track-event${query}`, headers: { ...auth, ...headers }, payload: payload as string })
  await track('200 track', { userId: 'u', event: 'e', properties: { note: 'ok' } })
  await track('200 dry run', { userId: 'u', event: 'e' }, '?dryRun=true')
  await call(app, '200 batch', { method: 'POST', url: `/v1/connections/${id}/actions/batch-send`, headers: auth, payload: { batch: [{ type: 'identify', userId: 'u' }] } })
  await track('400 writeKey in body', { userId: 'u', event: 'e', writeKey: WRITE_KEY })
  await track('400 invalid', { userId: '', event: WRITE_KEY, properties: WRITE_KEY })
  await track('413 event', { userId: 'u', event: 'e', properties: { blob: 'x'.repeat(3000) } })
  await track('413 stream', { userId: 'u', event: 'e', properties: { blob: 'x'.repeat(200_000) } })
  await track('415 text', `writeKey=${WRITE_KEY}`, '', { 'content-type': 'text/plain' })
  await track('400 idempotency key', { userId: 'u', event: 'e' }, '', { 'idempotency-key': 'k'.repeat(300) })
  const echo = (key: string): string => JSON.stringify({ error: 'invalid', authorization: `Basic ${basic(key)}`, writeKey: key, again: `${key}:` })
  fake.respondWith([{ status: 400, body: echo(WRITE_KEY) }])
  await track('502 echo', { userId: 'u', event: 'e' })
  // The key straddles the excerpt's 200-character cut, then the 1,024-byte read limit.
  fake.respondWith([{ status: 401, body: `${'x'.repeat(180)}${WRITE_KEY} ${basic(WRITE_KEY)}` }])
  await track('502 echo at the cut', { userId: 'u', event: 'e' })
  fake.respondWith([{ status: 403, body: `${'[redacted]'.repeat(60)}${WRITE_KEY}`.padStart(1024 + 20, 'y').slice(0, 1024 - 10) + WRITE_KEY + 'z'.repeat(5000) }])
  await track('502 echo at the read limit', { userId: 'u', event: 'e' })
  fake.respondWith([{ status: 413, body: `${WRITE_KEY.repeat(40)}` }])
  await track('502 repeated echo', { userId: 'u', event: 'e' })
  fake.respondWith([{ status: 500, body: echo(WRITE_KEY) }, { status: 503, headers: { 'retry-after': '0' }, body: echo(WRITE_KEY) }])
  await track('503 echoing 5xx', { userId: 'u', event: 'e' })
  fake.respondWith([{ reset: true }, { reset: true }])
  await track('503 resets', { userId: 'u', event: 'e' })
  fake.respondWith([{ hang: true }])
  await track('504 deadline', { userId: 'u', event: 'e' })
  fake.respondWith([{ status: 302, headers: { location: `http://${WRITE_KEY}@127.0.0.1:1/` } }])
  await track('502 redirect', { userId: 'u', event: 'e' })

  // Rotation, then the new key in use, then delete.
  await call(app, 'rotate', { method: 'PUT', url: `/v1/connections/${id}/write-key`, headers: auth, payload: { writeKey: ROTATED_KEY, password: PASSWORD } })
  fake.respondWith([{ status: 400, body: echo(ROTATED_KEY) }])
  await track('502 echo of the rotated key', { userId: 'u', event: 'e' })
  await track('200 after rotation', { userId: 'u', event: 'e' })
  await call(app, 'delete', { method: 'DELETE', url: `/v1/connections/${id}`, headers: auth })
  await call(app, '404 after delete', { method: 'POST', url: `/v1/connections/${id}/actions/track-event`, headers: auth, payload: { userId: 'u', event: 'e' } })

  // Operations.
  for (const url of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs/json', '/nope']) await call(app, url, { method: 'GET', url })

  // 429 on the rate-limited app, with the same planted key and a fresh token.
  const limitedCreated = await limited.app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: admin, payload: { name: 'Limited' } })
  const limitedWorkspace = { token: limitedCreated.json().token as string, auth: { authorization: `Bearer ${limitedCreated.json().token as string}` } }
  await call(limited.app, 'create on limited', { method: 'POST', url: '/v1/connections', headers: limitedWorkspace.auth, payload: { name: 'x', writeKey: WRITE_KEY, password: PASSWORD } })
  for (let i = 0; i < 4; i++) await call(limited.app, `limited ${i}`, { method: 'POST', url: '/v1/connections', headers: limitedWorkspace.auth, payload: { name: 'x', writeKey: WRITE_KEY } })
  t.ok(answers.some((a) => a.response.statusCode === 429), 'the 429 path was taken')

  const statuses = new Set(answers.map((a) => a.response.statusCode))
  for (const status of [200, 201, 204, 400, 401, 404, 413, 415, 429, 502, 503, 504]) t.ok(statuses.has(status), `the ${status} path was taken`)
  t.equal(fake.requests.filter((r) => r.headers.authorization === `Basic ${basic(WRITE_KEY)}`).length > 0, true, 'the planted key did reach the fake (so it was really used)')
  t.ok(fake.requests.some((r) => r.headers.authorization === `Basic ${basic(ROTATED_KEY)}`), 'and so did the rotated one')
  t.notOk(fake.requests.some((r) => r.rawBody.includes(PASSWORD)), 'the password was never sent')

  const tokens = [workspace.token, secondToken, limitedWorkspace.token]
  const forms = [
    ...secretForms('writeKey', WRITE_KEY), ...secretForms('rotatedKey', ROTATED_KEY), ...secretForms('password', PASSWORD), ...secretForms('ADMIN_TOKEN', ADMIN),
    ...tokens.flatMap((token, i) => secretForms(`token${i}`, token))
  ]
  // A cut secret leaks as a piece: no 12-character slice of a key may show up either.
  const pieces = [...slicesOf('writeKey', WRITE_KEY, 12), ...slicesOf('rotatedKey', ROTATED_KEY, 12), ...slicesOf('password', PASSWORD, 12), ...slicesOf('ADMIN_TOKEN', ADMIN, 12)]

  for (const { label, response, issues } of answers) {
    // An issuing answer shows its own new token once, by design; nothing else.
    const allowed = issues === 'token' ? new Set(secretForms('issued', String(response.json().token)).map((f) => f.text)) : new Set<string>()
    const found = findSecrets(answerText(response), [...forms, ...pieces].filter((f) => !allowed.has(f.text)))
    t.same(found, [], `answer "${label}" (${response.statusCode})`)
  }
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.same(findSecrets(metrics.body, [...forms, ...pieces]), [], '/metrics text')

  const logs = [...main.logs, ...limited.logs]
  t.ok(logs.some((line) => line.includes('"level":10') || line.includes('"level":20')) || logs.length > answers.length, `${logs.length} log lines at trace level`)
  for (const line of logs) {
    const found = findSecrets(line, [...forms, ...pieces])
    if (found.length > 0) t.fail(`log line carries ${found.join(', ')}: ${line.slice(0, 300)}`)
  }
  t.pass(`${logs.length} log lines searched`)

  const searchFiles = (when: string) => {
    for (const dir of [main.dir, limited.dir]) {
      const files = readTree(dir)
      t.ok(files.length > 0, `${when}: files in ${dir}`)
      for (const { path, bytes } of files) t.same(findSecrets(bytes, forms), [], `${when}: ${path.slice(dir.length)} (${bytes.length} bytes)`)
    }
  }
  // While open (the -wal and -shm files exist), then after a clean close (checkpointed).
  const open = readTree(main.dir).map((f) => f.path)
  t.ok(open.some((p) => p.endsWith('-wal')), 'the WAL file was searched while the app ran')
  searchFiles('open')
  await main.app.close()
  await limited.app.close()
  searchFiles('closed')
})
