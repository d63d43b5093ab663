import t from 'tap'
import { createHash } from 'node:crypto'
import { adminAuth, build, createConnection, createWorkspace } from './helper.js'
import { generateToken, hashToken, hashesEqual, secretsEqual } from '../src/tokens.js'

t.test('every wrong workspace credential gets the same 401', async (t) => {
  const { app } = await build(t)
  const workspace = await createWorkspace(app)
  const issued = await app.inject({ method: 'POST', url: `/v1/admin/workspaces/${workspace.id}/tokens`, headers: adminAuth })
  const second = issued.json<{ id: string, token: string }>()
  await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${second.id}`, headers: adminAuth })

  const cases: Record<string, Record<string, string>> = {
    missing: {},
    'not bearer': { authorization: `Basic ${Buffer.from(`${workspace.token}:`).toString('base64')}` },
    garbage: { authorization: 'Bearer garbage' },
    'bad checksum': { authorization: `Bearer ${workspace.token.slice(0, -1)}${workspace.token.endsWith('A') ? 'B' : 'A'}` },
    unknown: { authorization: `Bearer ${generateToken()}` },
    revoked: { authorization: `Bearer ${second.token}` }
  }
  const bodies = new Set<string>()
  for (const [name, headers] of Object.entries(cases)) {
    const response = await app.inject({ method: 'GET', url: '/v1/connections', headers })
    t.equal(response.statusCode, 401, name)
    t.match(response.headers['content-type'], /^application\/problem\+json/, `${name} content type`)
    bodies.add(response.body)
  }
  t.equal(bodies.size, 1, 'all 401 bodies are identical')
  t.match(JSON.parse([...bodies][0]!), { status: 401, code: 'unauthorized', title: 'Unauthorized' })

  const ok = await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })
  t.equal(ok.statusCode, 200, 'the live token still works')
})

t.test('a revoked token stops working on the next request', async (t) => {
  const { app } = await build(t)
  const workspace = await createWorkspace(app)
  await createConnection(app, workspace)
  const before = await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })
  t.equal(before.statusCode, 200)
  const tokenId = (await app.store.findToken((await import('../src/tokens.js')).hashToken(workspace.token)))!.id
  const revoke = await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${tokenId}`, headers: adminAuth })
  t.equal(revoke.statusCode, 204)
  const after = await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })
  t.equal(after.statusCode, 401)
  const again = await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${tokenId}`, headers: adminAuth })
  t.equal(again.statusCode, 404, 'revoking twice is a 404')
  t.equal(again.json().code, 'token_not_found')
})

t.test('a token of one workspace cannot be revoked through another', async (t) => {
  const { app } = await build(t)
  const a = await createWorkspace(app, 'A')
  const b = await createWorkspace(app, 'B')
  const tokenId = (await app.store.findToken((await import('../src/tokens.js')).hashToken(a.token)))!.id
  const wrong = await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${b.id}/tokens/${tokenId}`, headers: adminAuth })
  t.equal(wrong.statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/v1/connections', headers: a.auth })).statusCode, 200)
})

t.test('admin routes: 404 when ADMIN_TOKEN is unset, 401 on a wrong token', async (t) => {
  const { app } = await build(t, { ADMIN_TOKEN: '' })
  const unset = await app.inject({ method: 'GET', url: '/v1/admin/workspaces', headers: adminAuth })
  t.equal(unset.statusCode, 404)
  t.equal(unset.json().code, 'not_found')
  const unknownRoute = await app.inject({ method: 'GET', url: '/v1/admin/nothing-here' })
  t.same(unset.json(), unknownRoute.json(), 'indistinguishable from a route that does not exist')

  const { app: withAdmin } = await build(t)
  const wrong = await withAdmin.inject({ method: 'GET', url: '/v1/admin/workspaces', headers: { authorization: 'Bearer nope' } })
  t.equal(wrong.statusCode, 401)
  const none = await withAdmin.inject({ method: 'GET', url: '/v1/admin/workspaces' })
  t.equal(none.statusCode, 401)
})

t.test('workspaces: create, list, issue tokens', async (t) => {
  const { app } = await build(t)
  const created = await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: adminAuth, payload: { name: 'Agency One' } })
  t.equal(created.statusCode, 201)
  const body = created.json()
  t.match(body, { id: /^ws_/, name: 'Agency One', createdAt: String, token: /^sfw_[0-9A-Za-z]{38}$/ })
  const list = await app.inject({ method: 'GET', url: '/v1/admin/workspaces', headers: adminAuth })
  t.same(list.json(), { workspaces: [{ id: body.id, name: 'Agency One', createdAt: body.createdAt }] }, 'tokens are never listed')
  const missing = await app.inject({ method: 'POST', url: '/v1/admin/workspaces/ws_nope/tokens', headers: adminAuth })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().code, 'workspace_not_found')
  const bad = await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: adminAuth, payload: { name: '' } })
  t.equal(bad.statusCode, 400)
  t.same(bad.json().errors, [{ path: '/name', message: 'must NOT have fewer than 1 characters' }])
})

t.test('token hashes are plain SHA-256 hex, so hashes stored by any earlier version still match', (t) => {
  // FIPS 180-2's test vector, and one with a multi-byte character (hashed as UTF-8).
  t.equal(hashToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  t.equal(hashToken('é'), createHash('sha256').update('é', 'utf8').digest('hex'))
  t.ok(hashesEqual(hashToken('abc'), hashToken('abc')))
  t.notOk(hashesEqual(hashToken('abc'), hashToken('abd')))
  t.ok(secretsEqual('admin-secret', 'admin-secret'))
  t.notOk(secretsEqual('admin-secret', 'admin-secreT'))
  t.notOk(secretsEqual('admin-secret', 'admin-secret-longer'))
  t.end()
})
