// Every workspace route called with another workspace's ids and tokens: a foreign id answers
// exactly what a never-existing id answers (404 connection_not_found, byte for byte), nothing
// reaches Segment, and the owner's connections, keys and tokens are untouched.
import t from 'tap'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { adminAuth, createConnection, createWorkspace, resolveConnection, type TestWorkspace } from './helper.js'
import { setupActions, WRITE_KEY } from './support/actions.js'
import { STEADY_ENV } from './support/break.js'
import { testKeys } from './support/oauth.js'
import { hashToken } from '../src/tokens.js'

const NEVER = 'con_0000000000000000000000'
const ACTIONS = {
  'track-event': { userId: 'u', event: 'Stolen Event' },
  'identify-user': { userId: 'u', traits: { email: 'x@example.com' } },
  'group-user': { userId: 'u', groupId: 'g' },
  'page-view': { anonymousId: 'a', name: 'Home' },
  'alias-user': { previousId: 'a', userId: 'u' },
  'batch-send': { batch: [{ type: 'track', userId: 'u', event: 'e' }, { type: 'identify', userId: 'u' }] }
} as const

/** Every connection and action request a workspace could make on connection `id`. */
function requests (id: string): Array<Omit<InjectOptions, 'headers'> & { label: string, headers?: Record<string, string> }> {
  const list: Array<Omit<InjectOptions, 'headers'> & { label: string, headers?: Record<string, string> }> = [
    { label: 'GET', method: 'GET', url: `/v1/connections/${id}` },
    { label: 'HEAD', method: 'HEAD', url: `/v1/connections/${id}` },
    { label: 'PATCH name', method: 'PATCH', url: `/v1/connections/${id}`, payload: { name: 'stolen' } },
    { label: 'PATCH region', method: 'PATCH', url: `/v1/connections/${id}`, payload: { region: 'eu' } },
    { label: 'PATCH endpoint null', method: 'PATCH', url: `/v1/connections/${id}`, payload: { endpoint: null } },
    { label: 'PATCH invalid', method: 'PATCH', url: `/v1/connections/${id}`, payload: { region: 'mars' } },
    { label: 'PUT write-key', method: 'PUT', url: `/v1/connections/${id}/write-key`, payload: { writeKey: 'attacker-key-0000' } },
    { label: 'PUT write-key with password', method: 'PUT', url: `/v1/connections/${id}/write-key`, payload: { writeKey: 'attacker-key-0000', password: 'p' } },
    { label: 'PUT oauth', method: 'PUT', url: `/v1/connections/${id}/oauth`, payload: { clientId: 'attacker-app', keyId: 'attacker-key', privateKey: testKeys().privateKey } },
    { label: 'PUT oauth invalid', method: 'PUT', url: `/v1/connections/${id}/oauth`, payload: { clientId: 'attacker-app', keyId: 'attacker-key', privateKey: 'not a key' } },
    { label: 'DELETE oauth', method: 'DELETE', url: `/v1/connections/${id}/oauth` },
    { label: 'DELETE', method: 'DELETE', url: `/v1/connections/${id}` }
  ]
  for (const [action, body] of Object.entries(ACTIONS)) {
    const url = `/v1/connections/${id}/actions/${action}`
    list.push(
      { label: action, method: 'POST', url, payload: body },
      { label: `${action} dryRun`, method: 'POST', url: `${url}?dryRun=true`, payload: body },
      { label: `${action} dryRun=false`, method: 'POST', url: `${url}?dryRun=false`, payload: body },
      { label: `${action} Idempotency-Key`, method: 'POST', url, payload: body, headers: { 'idempotency-key': 'steal-1' } },
      { label: `${action} invalid body`, method: 'POST', url, payload: { nothing: true } }
    )
  }
  return list
}

/** What a client can observe of an answer, minus what differs by nature (request id). */
function observable (response: LightMyRequestResponse): { status: number, type: unknown, body: string, retryAfter: unknown } {
  return { status: response.statusCode, type: response.headers['content-type'], body: response.body, retryAfter: response.headers['retry-after'] }
}

async function snapshot (app: FastifyInstance, workspace: TestWorkspace, ids: string[]): Promise<unknown> {
  const list = await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })
  const each = await Promise.all(ids.map(async (id) => (await app.inject({ method: 'GET', url: `/v1/connections/${id}`, headers: workspace.auth })).json()))
  const keys = await Promise.all(ids.map(async (id) => {
    const resolved = await resolveConnection(app, workspace.id, id)
    return { writeKey: resolved.writeKey, baseUrl: resolved.baseUrl, oauth: resolved.oauth === undefined ? undefined : { ...resolved.oauth, privateKey: resolved.oauth.privateKey() } }
  }))
  return { list: list.json(), each, keys }
}

t.test('B on every route with each of A\'s connection ids: exactly the never-existing 404, nothing changes', async (t) => {
  const { app, fake, workspace: a, connectionId } = await setupActions(t, STEADY_ENV)
  const second = await createConnection(app, a, { name: 'A second', writeKey: 'wk_a_second_0000', region: 'eu', oauth: { clientId: 'a-app', keyId: 'a-key', privateKey: testKeys().privateKey } })
  const aIds = [connectionId, second.id]
  const b = await createWorkspace(app, 'B')
  const bOwn = await createConnection(app, b, { name: 'B own', writeKey: 'wk_b_own_00000000' })
  const before = await snapshot(app, a, aIds)
  const sentBefore = fake.requests.length

  for (const foreignId of aIds) {
    const foreign = requests(foreignId)
    const never = requests(NEVER)
    for (const [i, request] of foreign.entries()) {
      const { label, headers, ...options } = request
      const { label: _l, headers: neverHeaders, ...neverOptions } = never[i]!
      const gotForeign = await app.inject({ ...options, headers: { ...b.auth, ...headers } })
      const gotNever = await app.inject({ ...neverOptions, headers: { ...b.auth, ...neverHeaders } })
      t.same(observable(gotForeign), observable(gotNever), `${label}: A's id answers as a never-existing id`)
      if (!label.includes('invalid') && !label.startsWith('HEAD')) {
        t.match(gotForeign.json(), { status: 404, code: 'connection_not_found' }, `${label}: 404 connection_not_found`)
      }
    }
  }
  t.equal(fake.requests.length, sentBefore, 'nothing reached Segment from B\'s attempts')
  t.same(await snapshot(app, a, aIds), before, 'A\'s list, connections, Write Keys and base URLs are unchanged')

  const listB = await app.inject({ method: 'GET', url: '/v1/connections', headers: b.auth })
  t.same(listB.json<{ connections: Array<{ id: string }> }>().connections.map((c) => c.id), [bOwn.id], 'B sees only its own connection')

  // And the other way round: A cannot reach B's connection either.
  const aOnB = await app.inject({ method: 'POST', url: `/v1/connections/${bOwn.id}/actions/track-event`, headers: a.auth, payload: ACTIONS['track-event'] })
  const aOnNever = await app.inject({ method: 'POST', url: `/v1/connections/${NEVER}/actions/track-event`, headers: a.auth, payload: ACTIONS['track-event'] })
  t.same(observable(aOnB), observable(aOnNever))
  t.equal(fake.requests.length, sentBefore)

  // A still works, with its own key, after all of it.
  const sent = await app.inject({ method: 'POST', url: `/v1/connections/${connectionId}/actions/track-event`, headers: a.auth, payload: { userId: 'u', event: 'mine' } })
  t.equal(sent.statusCode, 200)
  t.equal(fake.requests.at(-1)!.headers.authorization, `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`)
})

t.test('rotation and delete through B\'s URL leave A\'s connection intact', async (t) => {
  const { app, fake, workspace: a, connectionId } = await setupActions(t, STEADY_ENV)
  const b = await createWorkspace(app, 'B')
  const before = await snapshot(app, a, [connectionId])
  for (let round = 0; round < 3; round++) {
    const rotate = await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/write-key`, headers: b.auth, payload: { writeKey: `attacker-${round}` } })
    const remove = await app.inject({ method: 'DELETE', url: `/v1/connections/${connectionId}`, headers: b.auth })
    t.equal(rotate.statusCode, 404)
    t.equal(remove.statusCode, 404)
  }
  t.same(await snapshot(app, a, [connectionId]), before, 'same name, region, hint, timestamps and Write Key')
  const sent = await app.inject({ method: 'POST', url: `/v1/connections/${connectionId}/actions/track-event`, headers: a.auth, payload: { userId: 'u', event: 'e' } })
  t.equal(sent.statusCode, 200)
  t.equal(fake.requests.length, 1)
  t.equal(fake.requests[0]!.headers.authorization, `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`, 'the original key is what Segment receives')
})

t.test('admin token routes with mismatched workspace and token ids answer as unknown ones', async (t) => {
  const { app, workspace: a } = await setupActions(t, STEADY_ENV)
  const b = await createWorkspace(app, 'B')
  const aTokenId = (await app.store.findToken(hashToken(a.token)))!.id
  const bTokenId = (await app.store.findToken(hashToken(b.token)))!.id
  const revoke = async (workspaceId: string, tokenId: string) => await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${workspaceId}/tokens/${tokenId}`, headers: adminAuth })

  const unknownToken = observable(await revoke(b.id, 'tok_0000000000000000000000'))
  t.match(JSON.parse(unknownToken.body), { status: 404, code: 'token_not_found' })
  t.same(observable(await revoke(b.id, aTokenId)), unknownToken, 'A\'s token through B: as an unknown token')
  t.same(observable(await revoke(a.id, bTokenId)), unknownToken, 'B\'s token through A: as an unknown token')
  t.same(observable(await revoke('ws_0000000000000000000000', aTokenId)), unknownToken, 'A\'s token through an unknown workspace')

  const issueUnknown = await app.inject({ method: 'POST', url: '/v1/admin/workspaces/ws_0000000000000000000000/tokens', headers: adminAuth })
  t.match(issueUnknown.json(), { status: 404, code: 'workspace_not_found' })
  // Workspace tokens are not admin credentials, not even for their own workspace.
  for (const workspace of [a, b]) {
    const own = await app.inject({ method: 'POST', url: `/v1/admin/workspaces/${workspace.id}/tokens`, headers: workspace.auth })
    t.equal(own.statusCode, 401)
    const del = await app.inject({ method: 'DELETE', url: `/v1/admin/workspaces/${workspace.id}/tokens/${workspace === a ? aTokenId : bTokenId}`, headers: workspace.auth })
    t.equal(del.statusCode, 401)
  }

  for (const workspace of [a, b]) {
    const ok = await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })
    t.equal(ok.statusCode, 200, 'both tokens still work')
  }
  // A token issued for B authenticates as B only.
  const issued = await app.inject({ method: 'POST', url: `/v1/admin/workspaces/${b.id}/tokens`, headers: adminAuth })
  const asB = { authorization: `Bearer ${issued.json().token as string}` }
  const aConnections = (await app.inject({ method: 'GET', url: '/v1/connections', headers: a.auth })).json<{ connections: Array<{ id: string }> }>().connections
  t.same((await app.inject({ method: 'GET', url: '/v1/connections', headers: asB })).json(), { connections: [] })
  for (const { id } of aConnections) {
    t.equal((await app.inject({ method: 'GET', url: `/v1/connections/${id}`, headers: asB })).statusCode, 404)
  }
})
