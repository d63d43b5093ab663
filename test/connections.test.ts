import t from 'tap'
import { build, createConnection, createWorkspace, resolveConnection } from './helper.js'
import { PASSWORD_WARNING } from '../src/connections.js'

const WRITE_KEY = 'wk_live_9f8e7d6c5b4a39281706f5e4'

t.test('create, list, get, patch, rotate, delete', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'Client A', writeKey: WRITE_KEY } })
  t.equal(created.statusCode, 201)
  const connection = created.json()
  t.match(connection, { id: /^con_/, name: 'Client A', region: 'us', createdAt: String, updatedAt: String })
  t.equal(connection.writeKeyHint, `…${WRITE_KEY.slice(-4)}`)
  t.notOk('warnings' in connection)
  t.notOk('endpoint' in connection)

  const list = await app.inject({ method: 'GET', url: '/v1/connections', headers: ws.auth })
  t.same(list.json(), { connections: [connection] })
  const got = await app.inject({ method: 'GET', url: `/v1/connections/${connection.id}`, headers: ws.auth })
  t.same(got.json(), connection)

  const patched = await app.inject({ method: 'PATCH', url: `/v1/connections/${connection.id}`, headers: ws.auth, payload: { name: 'Client A (EU)', region: 'eu' } })
  t.equal(patched.statusCode, 200)
  t.match(patched.json(), { id: connection.id, name: 'Client A (EU)', region: 'eu', writeKeyHint: connection.writeKeyHint })

  const rotated = await app.inject({ method: 'PUT', url: `/v1/connections/${connection.id}/write-key`, headers: ws.auth, payload: { writeKey: 'wk_live_new_key_0000abcd' } })
  t.equal(rotated.statusCode, 200)
  t.equal(rotated.json().writeKeyHint, '…abcd')
  const resolved = await resolveConnection(app, ws.id, connection.id)
  t.equal(resolved.writeKey, 'wk_live_new_key_0000abcd', 'the new key is what the next action uses')
  t.equal(resolved.baseUrl, 'https://events.eu1.segmentapis.com', 'EU connections go to the EU base URL')

  const deleted = await app.inject({ method: 'DELETE', url: `/v1/connections/${connection.id}`, headers: ws.auth })
  t.equal(deleted.statusCode, 204)
  t.equal(deleted.body, '')
  const gone = await app.inject({ method: 'GET', url: `/v1/connections/${connection.id}`, headers: ws.auth })
  t.equal(gone.statusCode, 404)
  t.equal(gone.json().code, 'connection_not_found')
})

t.test('the documentation-only password is neither stored nor sent, and warned about', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'A', writeKey: WRITE_KEY, password: 'hunter2-password' } })
  t.equal(created.statusCode, 201)
  t.same(created.json().warnings, [PASSWORD_WARNING])
  const blank = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'B', writeKey: WRITE_KEY, password: '' } })
  t.notOk('warnings' in blank.json(), 'a blank password is what Segment expects: no warning')
  const rotated = await app.inject({ method: 'PUT', url: `/v1/connections/${blank.json().id}/write-key`, headers: ws.auth, payload: { writeKey: WRITE_KEY, password: 'x' } })
  t.same(rotated.json().warnings, [PASSWORD_WARNING])
  const get = await app.inject({ method: 'GET', url: `/v1/connections/${created.json().id}`, headers: ws.auth })
  t.notOk('warnings' in get.json(), 'the warning belongs to the answer that received the password')
})

t.test('bad input: coded 400 listing every problem, nothing stored', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const bad = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: '', writeKey: 'has space', region: 'apac', extra: 1 } })
  t.equal(bad.statusCode, 400)
  t.match(bad.headers['content-type'], /application\/problem\+json/)
  const body = bad.json()
  t.equal(body.code, 'invalid_request')
  t.same(body.errors.map((e: { path: string }) => e.path).sort(), ['/extra', '/name', '/region', '/writeKey'])
  const colon = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'x', writeKey: 'a:b' } })
  t.equal(colon.statusCode, 400, 'a colon cannot be part of a Basic username')
  const notJson = await app.inject({ method: 'POST', url: '/v1/connections', headers: { ...ws.auth, 'content-type': 'application/json' }, payload: '{"name":' })
  t.equal(notJson.statusCode, 400)
  t.equal(notJson.json().code, 'invalid_request')
  const emptyPatch = await app.inject({ method: 'PATCH', url: '/v1/connections/con_x', headers: ws.auth, payload: {} })
  t.equal(emptyPatch.statusCode, 400)
  const list = await app.inject({ method: 'GET', url: '/v1/connections', headers: ws.auth })
  t.same(list.json(), { connections: [] }, 'nothing was stored')
})

t.test('endpoint only from the operator allowlist, normalised', async (t) => {
  const { app } = await build(t, { SEGMENT_ALLOWED_ENDPOINTS: 'https://proxy.example.com, http://127.0.0.1:9999' })
  const ws = await createWorkspace(app)
  const ok = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'A', writeKey: WRITE_KEY, endpoint: 'HTTPS://Proxy.Example.com:443/' } })
  t.equal(ok.statusCode, 201)
  t.equal(ok.json().endpoint, 'https://proxy.example.com')
  const resolved = await resolveConnection(app, ws.id, ok.json().id)
  t.equal(resolved.baseUrl, 'https://proxy.example.com')

  for (const endpoint of [
    'https://evil.example.com', 'https://proxy.example.com.', 'https://proxy.example.com:8443', 'http://proxy.example.com',
    'https://proxy.example.com@evil.example.com', 'https://user:pw@proxy.example.com', 'https://proxy.example.com/v1',
    'https://proxy.example.com?x=1', 'http://2130706433:9999', 'http://0x7f000001:9999', 'http://[::ffff:127.0.0.1]:9999', 'not a url', 'file:///etc/passwd'
  ]) {
    const refused = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'A', writeKey: WRITE_KEY, endpoint } })
    t.equal(refused.statusCode, 400, endpoint)
    t.equal(refused.json().code, 'endpoint_not_allowed', endpoint)
  }
  const patchBad = await app.inject({ method: 'PATCH', url: `/v1/connections/${ok.json().id}`, headers: ws.auth, payload: { endpoint: 'https://evil.example.com' } })
  t.equal(patchBad.json().code, 'endpoint_not_allowed')
  const removed = await app.inject({ method: 'PATCH', url: `/v1/connections/${ok.json().id}`, headers: ws.auth, payload: { endpoint: null } })
  t.equal(removed.statusCode, 200)
  t.notOk('endpoint' in removed.json())
  t.equal((await resolveConnection(app, ws.id, ok.json().id)).baseUrl, 'https://api.segment.io')
})

t.test('an endpoint the operator later removes from the allowlist receives nothing', async (t) => {
  const first = await build(t, { SEGMENT_ALLOWED_ENDPOINTS: 'https://proxy.example.com' })
  const ws = await createWorkspace(first.app)
  const connection = await createConnection(first.app, ws, { endpoint: 'https://proxy.example.com' })
  await first.app.close()
  const { buildApp } = await import('../src/app.js')
  const { loadConfig } = await import('../src/config.js')
  const second = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${first.dbPath}`, LOG_LEVEL: 'silent' }))
  t.teardown(async () => { await second.close() })
  await t.rejects(resolveConnection(second, ws.id, connection.id), { code: 'endpoint_not_allowed' })
})

t.test('tenant isolation: another workspace\'s connection is a plain 404 on every route', async (t) => {
  const { app } = await build(t)
  const a = await createWorkspace(app, 'A')
  const b = await createWorkspace(app, 'B')
  const mine = await createConnection(app, a)
  const routes = (id: string): Array<{ method: 'GET' | 'PATCH' | 'PUT' | 'DELETE', url: string, payload?: Record<string, unknown> }> => [
    { method: 'GET', url: `/v1/connections/${id}` },
    { method: 'PATCH', url: `/v1/connections/${id}`, payload: { name: 'stolen' } },
    { method: 'PUT', url: `/v1/connections/${id}/write-key`, payload: { writeKey: 'attacker-key-0000' } },
    { method: 'DELETE', url: `/v1/connections/${id}` }
  ]
  const unknownId = 'con_0000000000000000000000'
  for (const [index, route] of routes(mine.id).entries()) {
    const foreign = await app.inject({ ...route, headers: b.auth })
    const unknown = await app.inject({ ...routes(unknownId)[index]!, headers: b.auth })
    t.equal(foreign.statusCode, 404, `${route.method} ${route.url}`)
    t.same(foreign.json(), unknown.json(), `${route.method}: indistinguishable from an unknown id`)
  }
  const listB = await app.inject({ method: 'GET', url: '/v1/connections', headers: b.auth })
  t.same(listB.json(), { connections: [] })
  const still = await app.inject({ method: 'GET', url: `/v1/connections/${mine.id}`, headers: a.auth })
  t.same(still.json(), mine, 'nothing changed for the owner')
  t.equal((await resolveConnection(app, a.id, mine.id)).writeKey, 'wk_test_0123456789abcdef')
})

t.test('an opened Write Key is reused only for the very same sealed bytes of the very same row', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const a = await createConnection(app, ws, { writeKey: 'wk_live_aaaa_0000000001' })
  const b = await createConnection(app, ws, { writeKey: 'wk_live_bbbb_0000000002' })
  t.equal((await resolveConnection(app, ws.id, a.id)).writeKey, 'wk_live_aaaa_0000000001')
  t.equal((await resolveConnection(app, ws.id, a.id)).writeKey, 'wk_live_aaaa_0000000001', 'opened again from memory')

  const rotated = await app.inject({ method: 'PUT', url: `/v1/connections/${a.id}/write-key`, headers: ws.auth, payload: { writeKey: 'wk_live_aaaa_rotated0003' } })
  t.equal(rotated.statusCode, 200)
  t.equal((await resolveConnection(app, ws.id, a.id)).writeKey, 'wk_live_aaaa_rotated0003', 'a rotation is used by the next call')

  // A's current ciphertext, opened a moment ago, copied into B's row: its associated data names A,
  // so it must fail to open for B rather than come back from memory.
  const aRecord = (await app.store.getConnection(ws.id, a.id))!
  await app.store.replaceWriteKey(ws.id, b.id, aRecord.secret, '…copy', new Date().toISOString())
  await t.rejects(resolveConnection(app, ws.id, b.id), { code: 'key_unavailable', cause: { name: 'DecryptError' } })
})
