import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { createConnection, createWorkspace } from './helper.js'
import { actionUrl, setupActions, type ActionName, type ActionsSetup } from './support/actions.js'

const identity = 'must have userId or anonymousId (a non-empty string)'
const writeKeyMessage = 'must not be sent: the service authenticates with the connection\'s Write Key'
const notEmpty = 'must NOT have fewer than 1 characters'

/** Asserts a 400 invalid_request problem listing exactly `errors`, in any order. */
function checkInvalid (t: Test, response: LightMyRequestResponse, errors: Array<{ path: string, message: string }>, label: string): void {
  t.equal(response.statusCode, 400, `${label}: 400`)
  t.match(response.headers['content-type'], /^application\/problem\+json/, `${label}: problem+json`)
  const body = response.json()
  t.match(body, { status: 400, code: 'invalid_request', title: 'Invalid request', detail: String }, `${label}: problem document`)
  const sort = (list: Array<{ path: string, message: string }>) => [...list].sort((a, b) => `${a.path} ${a.message}`.localeCompare(`${b.path} ${b.message}`))
  t.same(sort(body.errors), sort(errors), `${label}: exactly these errors`)
}

/** Sends every case and checks its errors; finally that the fake received nothing. */
async function checkCases (t: Test, setup: ActionsSetup, cases: Array<[string, ActionName, unknown, Array<{ path: string, message: string }>]>): Promise<void> {
  for (const [label, action, body, errors] of cases) {
    checkInvalid(t, await setup.send(action, body), errors, label)
  }
  t.equal(setup.fake.requests.length, 0, 'nothing was sent to Segment')
}

t.test('identity: userId or anonymousId, non-empty', async (t) => {
  const setup = await setupActions(t)
  await checkCases(t, setup, [
    ['track without identity', 'track-event', { event: 'E' }, [{ path: '', message: identity }]],
    ['identify without identity', 'identify-user', { traits: { a: 1 } }, [{ path: '', message: identity }]],
    ['group without identity', 'group-user', { groupId: 'g' }, [{ path: '', message: identity }]],
    ['page without identity', 'page-view', { name: 'Home' }, [{ path: '', message: identity }]],
    ['empty userId', 'track-event', { userId: '', event: 'E' }, [{ path: '/userId', message: notEmpty }]],
    ['empty anonymousId', 'identify-user', { anonymousId: '' }, [{ path: '/anonymousId', message: notEmpty }]],
    ['both empty', 'page-view', { userId: '', anonymousId: '' }, [{ path: '/userId', message: notEmpty }, { path: '/anonymousId', message: notEmpty }]],
    ['userId not a string', 'identify-user', { userId: 42 }, [{ path: '/userId', message: 'must be string' }]]
  ])
})

t.test('required fields of each call', async (t) => {
  const setup = await setupActions(t)
  await checkCases(t, setup, [
    ['track without event', 'track-event', { userId: 'u' }, [{ path: '/event', message: 'is required' }]],
    ['track with empty event', 'track-event', { userId: 'u', event: '' }, [{ path: '/event', message: notEmpty }]],
    ['group without groupId', 'group-user', { userId: 'u' }, [{ path: '/groupId', message: 'is required' }]],
    ['alias without previousId', 'alias-user', { userId: 'u' }, [{ path: '/previousId', message: 'is required' }]],
    ['alias without userId', 'alias-user', { previousId: 'p', anonymousId: 'a' }, [{ path: '/userId', message: 'is required' }]],
    ['alias with neither', 'alias-user', {}, [{ path: '/previousId', message: 'is required' }, { path: '/userId', message: 'is required' }]],
    ['a type that contradicts the route', 'track-event', { userId: 'u', event: 'E', type: 'identify' }, [{ path: '/type', message: 'must be equal to constant' }]]
  ])
})

t.test('properties, traits, context and integrations must be JSON objects', async (t) => {
  const setup = await setupActions(t)
  const cases: Array<[string, ActionName, unknown, Array<{ path: string, message: string }>]> = []
  const fields: Array<[ActionName, string, Record<string, unknown>]> = [
    ['track-event', 'properties', { userId: 'u', event: 'E' }],
    ['page-view', 'properties', { userId: 'u' }],
    ['identify-user', 'traits', { userId: 'u' }],
    ['group-user', 'traits', { userId: 'u', groupId: 'g' }],
    ['track-event', 'context', { userId: 'u', event: 'E' }],
    ['alias-user', 'integrations', { previousId: 'p', userId: 'u' }]
  ]
  for (const [action, field, base] of fields) {
    for (const [kind, value] of [['array', [1, 2]], ['string', 'x'], ['null', null]] as const) {
      cases.push([`${action} ${field} ${kind}`, action, { ...base, [field]: value }, [{ path: `/${field}`, message: 'must be object' }]])
    }
  }
  await checkCases(t, setup, cases)
})

t.test('timestamp is ISO-8601 date-time, messageId at most 100 characters', async (t) => {
  const setup = await setupActions(t)
  const format = 'must match format "date-time"'
  await checkCases(t, setup, [
    ['words', 'track-event', { userId: 'u', event: 'E', timestamp: 'yesterday' }, [{ path: '/timestamp', message: format }]],
    ['date only', 'identify-user', { userId: 'u', timestamp: '2025-03-14' }, [{ path: '/timestamp', message: format }]],
    ['epoch number', 'page-view', { userId: 'u', timestamp: 1741944413 }, [{ path: '/timestamp', message: 'must be string' }]],
    ['impossible date', 'alias-user', { previousId: 'p', userId: 'u', timestamp: '2025-02-30T10:00:00Z' }, [{ path: '/timestamp', message: format }]],
    ['messageId of 101', 'track-event', { userId: 'u', event: 'E', messageId: 'm'.repeat(101) }, [{ path: '/messageId', message: 'must NOT have more than 100 characters' }]],
    ['messageId of 101 characters that are 202 bytes', 'group-user', { userId: 'u', groupId: 'g', messageId: 'é'.repeat(101) }, [{ path: '/messageId', message: 'must NOT have more than 100 characters' }]]
  ])
  // Just inside the rules: accepted and sent.
  const ok = await setup.send('track-event', { userId: 'u', event: 'E', messageId: 'é'.repeat(100), timestamp: '2025-03-14T09:26:53+01:00' })
  t.equal(ok.statusCode, 200, '100 characters and an offset time zone are fine')
  t.equal(ok.json().messageId, 'é'.repeat(100))
})

t.test('batch: size and item rules, with JSON Pointer paths', async (t) => {
  const setup = await setupActions(t)
  const types = 'type must be one of track, identify, group, page, screen, alias'
  await checkCases(t, setup, [
    ['empty batch', 'batch-send', { batch: [] }, [{ path: '/batch', message: 'must NOT have fewer than 1 items' }]],
    ['no batch', 'batch-send', { context: {} }, [{ path: '/batch', message: 'is required' }]],
    ['batch not an array', 'batch-send', { batch: { type: 'track' } }, [{ path: '/batch', message: 'must be array' }]],
    ['2,501 items (400, not 413)', 'batch-send', { batch: Array.from({ length: 2501 }, () => ({ type: 'identify', userId: 'u' })) },
      [{ path: '/batch', message: 'must NOT have more than 2500 items' }]],
    ['item without type', 'batch-send', { batch: [{ type: 'identify', userId: 'u' }, { userId: 'u', event: 'E' }] },
      [{ path: '/batch/1', message: 'must have type (one of track, identify, group, page, screen, alias)' }]],
    ['item with an unknown type', 'batch-send', { batch: [{ type: 'purchase', userId: 'u' }] }, [{ path: '/batch/0', message: types }]],
    ['track item without event', 'batch-send', { batch: [{ type: 'identify', userId: 'u' }, { type: 'identify', userId: 'u' }, { type: 'identify', userId: 'u' }, { type: 'track', userId: 'u' }] },
      [{ path: '/batch/3/event', message: 'is required' }]],
    ['group item without groupId', 'batch-send', { batch: [{ type: 'group', userId: 'u' }] }, [{ path: '/batch/0/groupId', message: 'is required' }]],
    ['screen item without identity', 'batch-send', { batch: [{ type: 'screen', name: 'S' }] }, [{ path: '/batch/0', message: identity }]],
    ['alias item without previousId', 'batch-send', { batch: [{ type: 'alias', userId: 'u' }] }, [{ path: '/batch/0/previousId', message: 'is required' }]],
    ['item properties an array', 'batch-send', { batch: [{ type: 'page', userId: 'u', properties: [] }] }, [{ path: '/batch/0/properties', message: 'must be object' }]],
    ['item timestamp not ISO', 'batch-send', { batch: [{ type: 'identify', userId: 'u', timestamp: 'now' }] }, [{ path: '/batch/0/timestamp', message: 'must match format "date-time"' }]],
    ['top-level context not an object', 'batch-send', { batch: [{ type: 'identify', userId: 'u' }], context: 'x', integrations: [] },
      [{ path: '/context', message: 'must be object' }, { path: '/integrations', message: 'must be object' }]]
  ])
  const ok = await setup.send('batch-send', { batch: Array.from({ length: 2500 }, () => ({ type: 'identify', userId: 'u' })) })
  t.equal(ok.statusCode, 200, '2,500 items are fine')
  t.equal(ok.json().count, 2500)
})

t.test('every problem is reported in one answer', async (t) => {
  const setup = await setupActions(t)
  await checkCases(t, setup, [
    ['single call', 'track-event', { event: '', properties: 'x', timestamp: 'soon', messageId: 'm'.repeat(101), writeKey: 'k' }, [
      { path: '', message: identity },
      { path: '/event', message: notEmpty },
      { path: '/properties', message: 'must be object' },
      { path: '/timestamp', message: 'must match format "date-time"' },
      { path: '/messageId', message: 'must NOT have more than 100 characters' },
      { path: '/writeKey', message: writeKeyMessage }
    ]],
    ['batch', 'batch-send', {
      batch: [
        { type: 'track', userId: 'u', event: 'ok' },
        { userId: 'u' },
        { type: 'nope' },
        { type: 'track', userId: 'u' },
        { type: 'alias' },
        { type: 'identify', traits: [] }
      ],
      integrations: null
    }, [
      { path: '/batch/1', message: 'must have type (one of track, identify, group, page, screen, alias)' },
      { path: '/batch/2', message: 'type must be one of track, identify, group, page, screen, alias' },
      { path: '/batch/3/event', message: 'is required' },
      { path: '/batch/4/previousId', message: 'is required' },
      { path: '/batch/4/userId', message: 'is required' },
      { path: '/batch/5', message: identity },
      { path: '/batch/5/traits', message: 'must be object' },
      { path: '/integrations', message: 'must be object' }
    ]]
  ])
})

t.test('a writeKey in the body is refused, at the top level and in batch items', async (t) => {
  const setup = await setupActions(t)
  await checkCases(t, setup, [
    ['single', 'identify-user', { userId: 'u', writeKey: 'wk_smuggled' }, [{ path: '/writeKey', message: writeKeyMessage }]],
    ['empty one too', 'alias-user', { previousId: 'p', userId: 'u', writeKey: '' }, [{ path: '/writeKey', message: writeKeyMessage }]],
    ['batch and item', 'batch-send', { batch: [{ type: 'identify', userId: 'u' }, { type: 'track', userId: 'u', event: 'E', writeKey: 'k' }], writeKey: 'k' },
      [{ path: '/batch/1/writeKey', message: writeKeyMessage }, { path: '/writeKey', message: writeKeyMessage }]]
  ])
})

t.test('not JSON: wrong content type (415), malformed or empty JSON (400)', async (t) => {
  const { app, fake, workspace, connectionId } = await setupActions(t)
  const raw = async (contentType: string | undefined, payload: string) => await app.inject({
    method: 'POST',
    url: actionUrl(connectionId, 'track-event'),
    headers: { ...workspace.auth, ...(contentType === undefined ? {} : { 'content-type': contentType }) },
    payload
  })
  const event = JSON.stringify({ userId: 'u', event: 'E' })
  for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml', 'multipart/form-data; boundary=x']) {
    const response = await raw(contentType, event)
    t.equal(response.statusCode, 415, contentType)
    t.match(response.headers['content-type'], /^application\/problem\+json/)
    t.match(response.json(), { status: 415, code: 'unsupported_media_type', title: String, detail: String }, contentType)
  }
  const batch = await app.inject({
    method: 'POST',
    url: actionUrl(connectionId, 'batch-send'),
    headers: { ...workspace.auth, 'content-type': 'text/plain' },
    payload: JSON.stringify({ batch: [{ type: 'identify', userId: 'u' }] })
  })
  t.equal(batch.statusCode, 415, 'batch-send too')

  checkInvalid(t, await raw('application/json', '{"userId":"u","event":'), [{ path: '', message: 'is not valid JSON' }], 'truncated JSON')
  checkInvalid(t, await raw('application/json', '{userId: "u"}'), [{ path: '', message: 'is not valid JSON' }], 'not JSON')
  checkInvalid(t, await raw('application/json', ''), [{ path: '', message: 'is empty' }], 'empty body')
  checkInvalid(t, await raw('application/json', '[]'), [{ path: '', message: 'must be object' }], 'an array')
  checkInvalid(t, await raw('application/json', '"track"'), [{ path: '', message: 'must be object' }], 'a string')
  t.equal(fake.requests.length, 0, 'nothing was sent to Segment')
  const ok = await raw('application/json; charset=utf-8', event)
  t.equal(ok.statusCode, 200, 'application/json with a charset is fine')
})

t.test('unknown connection and another workspace\'s connection get the same 404; no token gets 401', async (t) => {
  const { app, fake, workspace, connectionId, send } = await setupActions(t)
  const other = await createWorkspace(app, 'Other Agency')
  const theirs = await createConnection(app, other, { writeKey: 'wk_other_tenant_key_1' })
  const event = { userId: 'u', event: 'E' }
  const unknown = await send('track-event', event, { connectionId: 'con_0000000000000000000000' })
  const foreign = await send('track-event', event, { connectionId: theirs.id })
  t.equal(unknown.statusCode, 404)
  t.match(unknown.headers['content-type'], /^application\/problem\+json/)
  t.match(unknown.json(), { status: 404, code: 'connection_not_found', title: String, detail: String })
  t.equal(foreign.statusCode, 404)
  t.equal(foreign.body, unknown.body, 'another workspace\'s connection is indistinguishable from an unknown one')
  for (const action of ['identify-user', 'batch-send'] as const) {
    const body = action === 'batch-send' ? { batch: [{ type: 'identify', userId: 'u' }] } : { userId: 'u' }
    const response = await send(action, body, { connectionId: theirs.id })
    t.equal(response.body, unknown.body, `${action}: same 404`)
  }

  const noToken = await app.inject({ method: 'POST', url: actionUrl(connectionId, 'track-event'), payload: event })
  t.equal(noToken.statusCode, 401)
  t.match(noToken.headers['content-type'], /^application\/problem\+json/)
  t.match(noToken.json(), { status: 401, code: 'unauthorized' })
  const badToken = await app.inject({ method: 'POST', url: actionUrl(connectionId, 'track-event'), headers: { authorization: 'Bearer sfw_nope' }, payload: event })
  t.equal(badToken.body, noToken.body, 'a bad token: the same 401')
  const invalidNoToken = await app.inject({ method: 'POST', url: actionUrl(connectionId, 'track-event'), payload: { nothing: true } })
  t.equal(invalidNoToken.statusCode, 401, 'authentication comes before validation')
  t.equal(fake.requests.length, 0, 'nothing was sent to Segment')
  t.equal((await send('track-event', event, { workspace })).statusCode, 200, 'the owner still can')
})
