import { readFileSync } from 'node:fs'
import t, { type Test } from 'tap'
import { createConnection } from './helper.js'
import type { RecordedRequest } from './fake-segment.js'
import { GENERATED_ID, ISO, WRITE_KEY, basicAuth, fakeSegment, setupActions, withoutSentAt, type ActionName } from './support/actions.js'

// Read independently of src/version.ts, so a wrong name or version there fails here.
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { name: string, version: string }
const library = { name: 'segment-forwarder', version: pkg.version }
const timestamp = '2025-03-14T09:26:53.589+01:00'

type Json = Record<string, unknown>

// What a workflow sends for each action, and where Segment gets it.
const calls: Array<{ action: Exclude<ActionName, 'batch-send'>, path: string, body: Json }> = [
  {
    action: 'track-event',
    path: '/v1/track',
    body: { userId: 'user_8f2a61', event: 'Order Completed', properties: { orderId: 'ord_1', revenue: 129.9, note: 'crème brûlée 🎉' }, context: { ip: '203.0.113.7' }, timestamp }
  },
  {
    action: 'identify-user',
    path: '/v1/identify',
    body: { userId: 'user_8f2a61', traits: { email: 'camille@example.com', plan: 'pro' }, integrations: { All: false, Mixpanel: true } }
  },
  {
    action: 'group-user',
    path: '/v1/group',
    body: { anonymousId: 'anon-1', groupId: 'acct_1170', traits: { name: 'Initech', employees: 120 }, timestamp }
  },
  {
    action: 'page-view',
    path: '/v1/page',
    body: { anonymousId: 'anon-1', name: 'Pricing', category: 'Marketing', properties: { url: 'https://www.example.com/pricing' }, customField: [1, 'two'] }
  },
  {
    action: 'alias-user',
    path: '/v1/alias',
    body: { previousId: 'anon-1', userId: 'user_8f2a61' }
  }
]

/** Checks the request line and headers of a first attempt. */
function checkRequest (t: Test, request: RecordedRequest, path: string, writeKey: string): void {
  t.equal(request.method, 'POST', 'method')
  t.equal(request.url, path, 'path')
  t.equal(request.headers['content-type'], 'application/json', 'content-type')
  t.equal(request.headers.authorization, basicAuth(writeKey), 'Basic base64(writeKey + ":")')
  t.match(request.headers['user-agent'], new RegExp(`^segment-forwarder/${pkg.version.replaceAll('.', '\\.')}\\b`), 'user-agent names the service and version')
  t.notOk('x-retry-count' in request.headers, 'no x-retry-count on a first attempt')
  t.notOk(request.rawBody.includes(writeKey), 'the Write Key is not in the body')
  t.notOk('writeKey' in (request.body as Json), 'no writeKey field')
}

t.test('each single action sends exactly the caller\'s event plus messageId, context.library and sentAt', async (t) => {
  const { fake, send } = await setupActions(t)
  for (const [index, call] of calls.entries()) {
    const before = Date.now()
    const response = await send(call.action, call.body)
    t.equal(response.statusCode, 200, `${call.action} status`)
    const answer = response.json()
    t.same(answer, {
      status: 'accepted',
      action: call.action,
      messageId: answer.messageId,
      bytes: answer.bytes,
      attempts: 1,
      upstreamStatus: 200
    }, `${call.action} answer has exactly these fields`)
    t.match(answer.messageId, GENERATED_ID, `${call.action} generated messageId`)

    t.equal(fake.requests.length, index + 1, `${call.action}: one request upstream`)
    const request = fake.requests[index]!
    checkRequest(t, request, call.path, WRITE_KEY)
    t.equal(answer.bytes, Buffer.byteLength(request.rawBody), `${call.action}: bytes is the raw upstream body length`)
    const body = request.body as Json
    const context = call.body.context as Json | undefined
    t.same(body, {
      ...call.body,
      messageId: answer.messageId,
      context: { ...context, library },
      sentAt: body.sentAt
    }, `${call.action}: nothing else added, nothing changed`)
    t.match(body.sentAt, ISO, 'sentAt is an ISO date')
    const sentAt = Date.parse(body.sentAt as string)
    t.ok(sentAt >= before - 1000 && sentAt <= Date.now() + 1000, 'sentAt is the time of sending')
    if (call.body.timestamp !== undefined) t.equal(body.timestamp, timestamp, 'timestamp kept as given')
  }
})

t.test('a caller\'s context.library and messageId are kept', async (t) => {
  const { fake, send } = await setupActions(t)
  const event = {
    userId: 'u1',
    event: 'Signed Up',
    messageId: 'caller-message-id-42',
    context: { library: { name: 'taskjuice-workflow', version: '2.4.0' }, locale: 'fr-FR' }
  }
  const response = await send('track-event', event)
  t.equal(response.statusCode, 200)
  t.equal(response.json().messageId, 'caller-message-id-42')
  const body = fake.requests[0]!.body as Json
  t.same(withoutSentAt(body), event, 'sent exactly as given, library untouched')
  t.equal(response.json().bytes, Buffer.byteLength(fake.requests[0]!.rawBody))
})

// One item of every type; item 3 names its own library.
const mixedBatch = (): Json[] => [
  { type: 'track', userId: 'u1', event: 'Order Completed', properties: { revenue: 42, label: 'été 🎉' }, timestamp },
  { type: 'identify', userId: 'u1', traits: { email: 'u1@example.com' } },
  { type: 'group', userId: 'u1', groupId: 'g1', traits: { name: 'Initech' }, messageId: 'caller-batch-id-2' },
  { type: 'page', anonymousId: 'a1', name: 'Home', context: { library: { name: 'own-lib', version: '9' }, ip: '198.51.100.1' } },
  { type: 'screen', userId: 'u1', name: 'Checkout', properties: { step: 2 } },
  { type: 'alias', previousId: 'a1', userId: 'u1' }
]

t.test('batch-send: all six types, in order, messageIds aligned, library added where no context names one', async (t) => {
  const { fake, send } = await setupActions(t)
  const items = mixedBatch()
  const response = await send('batch-send', { batch: items, integrations: { All: true } })
  t.equal(response.statusCode, 200)
  const answer = response.json()
  t.same(answer, {
    status: 'accepted',
    action: 'batch-send',
    messageIds: answer.messageIds,
    count: 6,
    bytes: answer.bytes,
    attempts: 1,
    upstreamStatus: 200
  })
  t.equal(fake.requests.length, 1)
  const request = fake.requests[0]!
  checkRequest(t, request, '/v1/batch', WRITE_KEY)
  t.equal(answer.bytes, Buffer.byteLength(request.rawBody))
  const body = request.body as { batch: Json[], sentAt: string } & Json
  t.match(body.sentAt, ISO, 'sentAt at the top level')
  t.same(Object.keys(body).sort(), ['batch', 'integrations', 'sentAt'], 'top level: nothing added but sentAt')
  t.same(body.integrations, { All: true })
  t.equal(body.batch.length, 6)
  for (const [index, item] of items.entries()) {
    const sent = body.batch[index]!
    t.equal(sent.messageId, answer.messageIds[index], `item ${index}: messageId aligned with the answer`)
    const expected = index === 3
      ? { ...item, messageId: sent.messageId }
      : { ...item, messageId: sent.messageId, context: { ...(item.context as Json | undefined), library } }
    t.same(sent, expected, `item ${index} (${String(item.type)}): the caller's fields, messageId and library only`)
    t.notOk('sentAt' in sent, `item ${index}: no sentAt per item`)
  }
  t.equal(answer.messageIds[2], 'caller-batch-id-2', 'a caller-given messageId is kept')
  for (const index of [0, 1, 3, 4, 5]) t.match(answer.messageIds[index], GENERATED_ID)
  t.equal(new Set(answer.messageIds).size, 6, 'all distinct')
})

t.test('batch-send: a library in the batch\'s top-level context stands for every item', async (t) => {
  const { fake, send } = await setupActions(t)
  const items = mixedBatch()
  const context = { library: { name: 'taskjuice-workflow', version: '2.4.0' } }
  const response = await send('batch-send', { batch: items, context })
  t.equal(response.statusCode, 200)
  const body = fake.requests[0]!.body as { batch: Json[] } & Json
  t.same(body.context, context, 'top-level context passed through')
  for (const [index, item] of items.entries()) {
    t.same(body.batch[index], { ...item, messageId: response.json().messageIds[index] }, `item ${index}: no library added`)
  }
  t.equal(response.json().bytes, Buffer.byteLength(fake.requests[0]!.rawBody))
})

t.test('an EU connection goes to SEGMENT_EU_API_URL', async (t) => {
  const eu = await fakeSegment(t)
  const { app, fake, workspace, send } = await setupActions(t, { SEGMENT_EU_API_URL: eu.url })
  const { id } = await createConnection(app, workspace, { name: 'Client EU', writeKey: 'wk_eu_AAAABBBBCCCC', region: 'eu' })
  const response = await send('identify-user', { userId: 'u-eu' }, { connectionId: id })
  t.equal(response.statusCode, 200)
  t.equal(fake.requests.length, 0, 'nothing to the US host')
  t.equal(eu.requests.length, 1)
  checkRequest(t, eu.requests[0]!, '/v1/identify', 'wk_eu_AAAABBBBCCCC')
  t.equal((eu.requests[0]!.body as Json).messageId, response.json().messageId)

  const batch = await send('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'E' }] }, { connectionId: id })
  t.equal(batch.statusCode, 200)
  t.equal(eu.requests[1]!.url, '/v1/batch')
  t.equal(fake.requests.length, 0)
})

t.test('a custom endpoint from the allowlist gets the calls', async (t) => {
  const custom = await fakeSegment(t)
  const { app, fake, workspace, send } = await setupActions(t, { SEGMENT_ALLOWED_ENDPOINTS: custom.url })
  const { id } = await createConnection(app, workspace, { name: 'Proxied', writeKey: 'wk_proxy_1234567890', endpoint: custom.url })
  const response = await send('page-view', { anonymousId: 'a', name: 'Docs' }, { connectionId: id })
  t.equal(response.statusCode, 200)
  t.equal(fake.requests.length, 0, 'nothing to the regional host')
  t.equal(custom.requests.length, 1)
  checkRequest(t, custom.requests[0]!, '/v1/page', 'wk_proxy_1234567890')
})

t.test('rotating the Write Key: the very next action sends the new key', async (t) => {
  const { app, fake, workspace, connectionId, send } = await setupActions(t)
  t.equal((await send('track-event', { userId: 'u', event: 'Before' })).statusCode, 200)
  t.equal(fake.requests[0]!.headers.authorization, basicAuth(WRITE_KEY))
  const newKey = 'wk_rotated_ZYXWVUT98765'
  const rotated = await app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/write-key`, headers: workspace.auth, payload: { writeKey: newKey } })
  t.equal(rotated.statusCode, 200)
  t.equal((await send('track-event', { userId: 'u', event: 'After' })).statusCode, 200)
  t.equal(fake.requests[1]!.headers.authorization, basicAuth(newKey), 'new key at once')
  t.notOk(fake.requests[1]!.rawBody.includes(newKey))
})
