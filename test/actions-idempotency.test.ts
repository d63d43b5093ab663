import t from 'tap'
import { createConnection, createWorkspace } from './helper.js'
import { GENERATED_ID, setupActions, withoutSentAt } from './support/actions.js'

const event = { userId: 'u1', event: 'Order Completed', properties: { total: 12.5, label: 'café 🎉' } }
const items = [
  { type: 'track', userId: 'u1', event: 'A' },
  { type: 'identify', userId: 'u1', traits: { plan: 'pro' } },
  { type: 'page', anonymousId: 'a1', name: 'Home' },
  { type: 'alias', previousId: 'a1', userId: 'u1' }
]
const key = (value: string) => ({ 'idempotency-key': value })

t.test('the same Idempotency-Key twice sends the same messageId (single call)', async (t) => {
  const { fake, send } = await setupActions(t)
  const first = await send('track-event', event, { headers: key('run-8812-step-3') })
  const second = await send('track-event', event, { headers: key('run-8812-step-3') })
  t.equal(first.statusCode, 200)
  t.equal(second.statusCode, 200)
  t.match(first.json().messageId, GENERATED_ID)
  t.equal(second.json().messageId, first.json().messageId, 'same messageId in the answer')
  t.equal(fake.requests.length, 2, 'both were sent: Segment drops the duplicate')
  t.same(withoutSentAt(fake.requests[1]!.body), withoutSentAt(fake.requests[0]!.body), 'the same event upstream')
  t.equal((fake.requests[0]!.body as { messageId: string }).messageId, first.json().messageId)

  const other = await send('track-event', event, { headers: key('run-8812-step-4') })
  t.not(other.json().messageId, first.json().messageId, 'another key, another id')
  t.match(other.json().messageId, GENERATED_ID)
})

t.test('the same Idempotency-Key twice sends the same messageIds (batch, in item order)', async (t) => {
  const { fake, send } = await setupActions(t)
  const first = await send('batch-send', { batch: items }, { headers: key('k-batch') })
  const second = await send('batch-send', { batch: items }, { headers: key('k-batch') })
  t.equal(first.statusCode, 200)
  const ids = first.json().messageIds as string[]
  t.equal(ids.length, 4)
  t.equal(new Set(ids).size, 4, 'one id per item')
  for (const id of ids) t.match(id, GENERATED_ID)
  t.same(second.json().messageIds, ids, 'same ids in the same order')
  for (const request of fake.requests) {
    t.same((request.body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId), ids, 'item i carries id i upstream')
  }
  const other = await send('batch-send', { batch: items }, { headers: key('k-batch-2') })
  t.same((other.json().messageIds as string[]).filter((id) => ids.includes(id)), [], 'another key: no id in common')

  // Each item's id depends on its index, not on the batch size or its neighbours.
  const longer = await send('batch-send', { batch: [...items, { type: 'screen', userId: 'u1', name: 'S' }] }, { headers: key('k-batch') })
  t.same((longer.json().messageIds as string[]).slice(0, 4), ids, 'a longer batch with the key: the first items keep their ids')
})

t.test('without Idempotency-Key every call gets fresh random ids', async (t) => {
  const { send } = await setupActions(t)
  const seen = new Set<string>()
  for (let i = 0; i < 3; i++) {
    const single = await send('track-event', event)
    const batch = await send('batch-send', { batch: items })
    for (const id of [single.json().messageId as string, ...batch.json().messageIds as string[]]) {
      t.match(id, GENERATED_ID)
      seen.add(id)
    }
  }
  t.equal(seen.size, 3 * 5, 'no id repeats')
})

t.test('the same key in another workspace, on another connection, or for another action: other ids', async (t) => {
  const { app, workspace, connectionId, send } = await setupActions(t)
  const headers = key('shared-key')
  const base = (await send('track-event', event, { headers })).json().messageId as string
  const ids = new Map<string, string>([['this workspace, connection and action', base]])

  const second = await createConnection(app, workspace, { name: 'Client B', writeKey: 'wk_second_connection_01' })
  ids.set('another connection', (await send('track-event', event, { headers, connectionId: second.id })).json().messageId)

  const otherWorkspace = await createWorkspace(app, 'Other Agency')
  const theirs = await createConnection(app, otherWorkspace, { writeKey: 'wk_other_workspace_0001' })
  ids.set('another workspace', (await send('track-event', event, { headers, workspace: otherWorkspace, connectionId: theirs.id })).json().messageId)

  ids.set('another action (identify)', (await send('identify-user', { userId: 'u1' }, { headers })).json().messageId)
  ids.set('another action (page)', (await send('page-view', { userId: 'u1' }, { headers })).json().messageId)
  ids.set('batch-send item 0', (await send('batch-send', { batch: [{ type: 'track', ...event }] }, { headers })).json().messageIds[0])

  t.equal(new Set(ids.values()).size, ids.size, `all different: ${[...ids.keys()].join(', ')}`)
  for (const id of ids.values()) t.match(id, GENERATED_ID)
  t.equal((await send('track-event', event, { headers, connectionId })).json().messageId, base, 'and the original is still stable')
})

t.test('caller-given messageIds are kept, with or without a key', async (t) => {
  const { fake, send } = await setupActions(t)
  const given = { ...event, messageId: 'order-50314-completed' }
  t.equal((await send('track-event', given, { headers: key('k1') })).json().messageId, 'order-50314-completed')
  t.equal((await send('track-event', given)).json().messageId, 'order-50314-completed')

  const plain = (await send('batch-send', { batch: items }, { headers: key('k2') })).json().messageIds as string[]
  const mixed = items.map((item, index): Record<string, unknown> => index === 1 ? { ...item, messageId: 'caller-item-1' } : item)
  const withGiven = (await send('batch-send', { batch: mixed }, { headers: key('k2') })).json().messageIds as string[]
  t.same(withGiven, [plain[0], 'caller-item-1', plain[2], plain[3]], 'the given id is kept; the others are derived by index as before')
  t.same((fake.requests.at(-1)!.body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId), withGiven)
})

t.test('dryRun=true sends nothing and answers what a real send with the same key would', async (t) => {
  const { fake, send } = await setupActions(t)
  const dry = await send('track-event', event, { headers: key('k-dry'), query: 'dryRun=true' })
  t.equal(dry.statusCode, 200)
  t.same(dry.json(), { status: 'validated', action: 'track-event', messageId: dry.json().messageId, bytes: dry.json().bytes, attempts: 0 }, 'validated, 0 attempts, no upstreamStatus')
  t.equal(fake.requests.length, 0, 'nothing sent')
  const real = await send('track-event', event, { headers: key('k-dry') })
  t.equal(real.json().messageId, dry.json().messageId, 'same messageId')
  t.equal(real.json().bytes, dry.json().bytes, 'same bytes')
  t.equal(Buffer.byteLength(fake.requests[0]!.rawBody), dry.json().bytes, 'the dry run measured the real body')

  const dryBatch = await send('batch-send', { batch: items, context: { locale: 'fr-FR' } }, { headers: key('k-dry'), query: 'dryRun=true' })
  t.same(dryBatch.json(), { status: 'validated', action: 'batch-send', messageIds: dryBatch.json().messageIds, count: 4, bytes: dryBatch.json().bytes, attempts: 0 })
  t.equal(fake.requests.length, 1, 'still nothing more sent')
  const realBatch = await send('batch-send', { batch: items, context: { locale: 'fr-FR' } }, { headers: key('k-dry') })
  t.same(realBatch.json().messageIds, dryBatch.json().messageIds)
  t.equal(realBatch.json().bytes, dryBatch.json().bytes)
  t.equal(Buffer.byteLength(fake.requests[1]!.rawBody), dryBatch.json().bytes)

  const notDry = await send('identify-user', { userId: 'u' }, { query: 'dryRun=false' })
  t.equal(notDry.json().status, 'accepted', 'dryRun=false sends')
  t.equal(fake.requests.length, 3)
  const invalidDry = await send('track-event', { userId: 'u' }, { query: 'dryRun=true' })
  t.equal(invalidDry.statusCode, 400, 'a dry run validates')
  const badFlag = await send('track-event', event, { query: 'dryRun=yes' })
  t.equal(badFlag.statusCode, 400, 'dryRun is true or false')
  t.equal(badFlag.json().code, 'invalid_request')
  t.equal(fake.requests.length, 3, 'nothing sent for either')
})

t.test('an Idempotency-Key longer than 255 characters is refused', async (t) => {
  const { fake, send } = await setupActions(t)
  const response = await send('track-event', event, { headers: key('k'.repeat(256)) })
  t.equal(response.statusCode, 400)
  t.match(response.json(), { code: 'invalid_request', errors: [{ path: String, message: String }] })
  t.equal(fake.requests.length, 0)
  t.equal((await send('track-event', event, { headers: key('k'.repeat(255)) })).statusCode, 200)
})
