import t from 'tap'
import { AppError } from '../src/errors.js'
import { buildUpstream, type BuildOptions } from '../src/segment/build.js'
import { serviceName, serviceVersion } from '../src/version.js'

const options: BuildOptions = { workspaceId: 'ws_a', connectionId: 'con_a', maxEventBytes: 32000, maxBatchBytes: 500000 }
const library = { name: serviceName, version: serviceVersion }
const sentAt = new Date('2025-06-01T12:00:00.000Z')

function parse (body: Buffer): Record<string, any> {
  return JSON.parse(body.toString('utf8')) as Record<string, any>
}

function tooLarge (fn: () => unknown): AppError {
  try {
    fn()
  } catch (error) {
    if (error instanceof AppError && error.code === 'payload_too_large') return error
    throw error
  }
  throw new Error('expected payload_too_large')
}

t.test('a single call gets a messageId, context.library and sentAt, and keeps the rest', async (t) => {
  const body = { userId: 'u1', event: 'Order Completed', properties: { revenue: 129.9 }, timestamp: '2025-01-02T03:04:05.678+02:00', context: { ip: '203.0.113.7' } }
  const copy = structuredClone(body)
  const built = buildUpstream('track-event', body, options)
  t.equal(built.path, '/v1/track')
  t.equal(built.events, 1)
  t.equal(built.messageIds.length, 1)
  t.match(built.messageIds[0], /^sfw-[0-9a-f-]{36}$/)
  const sent = parse(built.render(sentAt))
  t.same(sent, { ...body, messageId: built.messageIds[0], context: { ip: '203.0.113.7', library }, sentAt: '2025-06-01T12:00:00.000Z' })
  t.notOk('writeKey' in sent)
  t.notOk('type' in sent, 'nothing else is added')
  t.same(body, copy, 'the caller\'s object is untouched')
})

t.test('a caller\'s messageId and context.library are kept; a caller\'s sentAt is replaced', async (t) => {
  const body = { anonymousId: 'a1', messageId: 'order-50314', context: { library: { name: 'analytics-python', version: '2.3.0' } }, sentAt: '2020-01-01T00:00:00.000Z' }
  const built = buildUpstream('identify-user', body, options)
  t.same(built.messageIds, ['order-50314'])
  const sent = parse(built.render(sentAt))
  t.same(sent.context, { library: { name: 'analytics-python', version: '2.3.0' } })
  t.equal(sent.sentAt, '2025-06-01T12:00:00.000Z')
  t.equal(built.render(sentAt).indexOf('"sentAt"'), built.render(sentAt).lastIndexOf('"sentAt"'), 'one sentAt only')
})

t.test('a batch item\'s own sentAt is dropped; the batch carries one sentAt, the time of sending', async (t) => {
  const body = {
    batch: [
      { type: 'track', userId: 'u1', event: 'A', messageId: 'm-1', context: { library: { name: 'x', version: '1' } }, sentAt: '2020-01-01T00:00:00.000Z' },
      { type: 'identify', userId: 'u1', sentAt: '2020-01-02T00:00:00.000Z' },
      { type: 'page', anonymousId: 'a1', timestamp: '2020-01-03T00:00:00.000Z' }
    ],
    sentAt: '2020-01-04T00:00:00.000Z'
  }
  const built = buildUpstream('batch-send', body, options)
  const rendered = built.render(sentAt)
  const sent = parse(rendered)
  t.equal(sent.sentAt, '2025-06-01T12:00:00.000Z')
  t.same(sent.batch.map((item: Record<string, unknown>) => item.sentAt), [undefined, undefined, undefined], 'no item keeps a sentAt')
  t.equal(sent.batch[2].timestamp, '2020-01-03T00:00:00.000Z', 'a timestamp is kept as given')
  t.equal(rendered.toString('utf8').split('"sentAt"').length - 1, 1, 'one sentAt in the whole body')
  t.equal(built.bytes, rendered.length, 'the size is that of the body sent')
})

t.test('each action goes to its path', async (t) => {
  t.equal(buildUpstream('identify-user', { userId: 'u' }, options).path, '/v1/identify')
  t.equal(buildUpstream('group-user', { userId: 'u', groupId: 'g' }, options).path, '/v1/group')
  t.equal(buildUpstream('page-view', { userId: 'u' }, options).path, '/v1/page')
  t.equal(buildUpstream('alias-user', { userId: 'u', previousId: 'p' }, options).path, '/v1/alias')
  t.equal(buildUpstream('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'e' }] }, options).path, '/v1/batch')
})

t.test('bytes is exactly the size of every rendering, with multi-byte text', async (t) => {
  const body = { userId: 'ü', event: 'Café ☕', properties: { note: 'naïve 🎉'.repeat(50) } }
  const built = buildUpstream('track-event', body, options)
  for (const at of [sentAt, new Date(0), new Date('9999-12-31T23:59:59.999Z')]) {
    t.equal(Buffer.byteLength(built.render(at)), built.bytes)
  }
  const batch = buildUpstream('batch-send', {
    batch: [{ type: 'track', userId: 'ü', event: 'é' }, { type: 'identify', anonymousId: '🎉', traits: { name: 'Zoë' } }],
    context: { locale: 'fr-FR' },
    integrations: { All: true },
    extra: 'passes through'
  }, options)
  t.equal(Buffer.byteLength(batch.render(sentAt)), batch.bytes)
  t.equal(parse(batch.render(sentAt)).extra, 'passes through')
})

t.test('a batch bigger than its first buffer is written whole, multi-byte text included', async (t) => {
  // The builder starts with about 512 bytes per item and doubles; these items are about 3 KB each,
  // with 1-, 2-, 3- and 4-byte characters, so the buffer grows several times, mid-item too.
  const items = Array.from({ length: 40 }, (_, i) => ({ type: 'track', userId: `u${i}`, event: 'e', properties: { note: 'aé☕🎉'.repeat(150 + i) } }))
  const built = buildUpstream('batch-send', { batch: items }, options)
  const body = built.render(sentAt)
  t.equal(body.length, built.bytes)
  const sent = parse(body)
  t.equal(sent.batch.length, 40)
  t.same(sent.batch.map((item: { properties: unknown }) => item.properties), items.map((item) => item.properties))
  t.same(sent.batch.map((item: { messageId: string }) => item.messageId), built.messageIds)
  t.equal(sent.sentAt, sentAt.toISOString())
  t.not(built.render(sentAt), built.render(sentAt), 'a new buffer for each attempt')
})

t.test('a batch: item order, messageIds, library per item, sentAt at the top level', async (t) => {
  const body = {
    batch: [
      { type: 'identify', userId: 'u1', traits: { plan: 'pro' } },
      { type: 'track', userId: 'u1', event: 'Order Completed', messageId: 'mine-1', timestamp: '2025-01-01T00:00:00Z' },
      { type: 'page', anonymousId: 'a1', context: { library: { name: 'x', version: '1' } } }
    ],
    integrations: { All: false, Mixpanel: true },
    sentAt: '2000-01-01T00:00:00.000Z'
  }
  const copy = structuredClone(body)
  const built = buildUpstream('batch-send', body, options)
  t.equal(built.events, 3)
  t.equal(built.messageIds[1], 'mine-1')
  t.equal(new Set(built.messageIds).size, 3)
  const sent = parse(built.render(sentAt))
  t.same(Object.keys(sent), ['batch', 'integrations', 'sentAt'])
  t.equal(sent.sentAt, '2025-06-01T12:00:00.000Z')
  t.same(sent.integrations, { All: false, Mixpanel: true })
  t.same(sent.batch.map((item: any) => item.messageId), built.messageIds)
  t.same(sent.batch[0].context, { library })
  t.equal(sent.batch[1].timestamp, '2025-01-01T00:00:00Z')
  t.same(sent.batch[2].context, { library: { name: 'x', version: '1' } })
  for (const item of sent.batch) t.notOk('sentAt' in item)
  t.same(body, copy, 'the caller\'s objects are untouched')
})

t.test('a library in the batch\'s context stands for every item', async (t) => {
  const built = buildUpstream('batch-send', {
    batch: [{ type: 'track', userId: 'u', event: 'e', context: { ip: '198.51.100.1' } }, { type: 'alias', userId: 'u', previousId: 'p' }],
    context: { library: { name: 'taskjuice', version: '2' } }
  }, options)
  const sent = parse(built.render(sentAt))
  t.same(sent.batch[0].context, { ip: '198.51.100.1' })
  t.notOk('context' in sent.batch[1])
  t.same(sent.context, { library: { name: 'taskjuice', version: '2' } })
})

t.test('renders differ only in sentAt', async (t) => {
  const built = buildUpstream('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'e' }] }, options)
  const first = parse(built.render(new Date(1000)))
  const second = parse(built.render(new Date(2000)))
  t.not(first.sentAt, second.sentAt)
  delete first.sentAt
  delete second.sentAt
  t.same(first, second)
})

t.test('an Idempotency-Key makes the generated messageIds repeatable', async (t) => {
  const body = { batch: [{ type: 'track', userId: 'u', event: 'a' }, { type: 'track', userId: 'u', event: 'b', messageId: 'own' }, { type: 'track', userId: 'u', event: 'c' }] }
  const keyed = { ...options, idempotencyKey: 'step-42' }
  const first = buildUpstream('batch-send', body, keyed)
  const again = buildUpstream('batch-send', body, keyed)
  t.same(first.messageIds, again.messageIds)
  t.equal(first.messageIds[1], 'own')
  t.not(first.messageIds[0], first.messageIds[2])
  t.not(buildUpstream('batch-send', body, options).messageIds[0], buildUpstream('batch-send', body, options).messageIds[0], 'random without a key')
  const single = buildUpstream('track-event', { userId: 'u', event: 'a' }, keyed)
  t.equal(single.messageIds[0], buildUpstream('track-event', { userId: 'u', event: 'a' }, keyed).messageIds[0])
  t.not(single.messageIds[0], first.messageIds[0], 'the action is part of the id')
})

// The size a single track call renders to, so a test can aim at a limit byte for byte.
function trackOfSize (bytes: number): Record<string, unknown> {
  const base = { userId: 'u', event: 'é', properties: { text: '' } }
  const overhead = buildUpstream('track-event', base, { ...options, idempotencyKey: 'k' }).bytes
  const room = bytes - overhead
  // 'é' is 2 bytes, '🎉' 4: characters and bytes differ.
  const text = '🎉'.repeat(Math.floor(room / 4)) + 'é'.repeat(Math.floor((room % 4) / 2)) + 'x'.repeat(room % 2)
  return { ...base, properties: { text } }
}

t.test('a single call at the limit passes; one byte over is 413 with largestFields', async (t) => {
  const keyed = { ...options, idempotencyKey: 'k', maxEventBytes: 2000 }
  const atLimit = trackOfSize(2000)
  const built = buildUpstream('track-event', atLimit, keyed)
  t.equal(built.bytes, 2000)
  t.equal(Buffer.byteLength(built.render(sentAt)), 2000)
  t.ok(JSON.stringify(atLimit).length < 2000, 'fewer characters than bytes')

  const error = tooLarge(() => buildUpstream('track-event', trackOfSize(2001), keyed))
  t.equal(error.status, 413)
  t.match(error.extras, { limit: 2000, size: 2001 })
  t.notOk('index' in error.extras)
  t.equal(error.extras.largestFields?.[0]?.path, '/properties')
  t.ok(error.extras.largestFields!.length <= 5)
  const sizes = error.extras.largestFields!.map((field) => field.bytes)
  t.same(sizes, [...sizes].sort((a, b) => b - a), 'biggest first')
})

t.test('a batch item is measured with the batch context and integrations merged in', async (t) => {
  const limits = { ...options, idempotencyKey: 'k', maxEventBytes: 1000 }
  const context = { campaign: { name: 'été 🎉 2025', source: 'newsletter' }, locale: 'fr-FR' }
  const integrations = { All: true, 'Google Analytics': false }
  const item = (text: string) => ({ type: 'track', userId: 'u', event: 'e', properties: { text }, context: { locale: 'de-DE' } })
  // Measure the merged item as Segment sees it: item fields win, batch context and integrations filled in.
  const seen = (text: string) => {
    const built = buildUpstream('batch-send', { batch: [item(text)] }, limits)
    const sent = parse(built.render(sentAt)).batch[0]
    return Buffer.byteLength(JSON.stringify({ ...sent, context: { ...context, ...sent.context }, integrations: { ...integrations } }))
  }
  let text = 'é'.repeat(300)
  const base = seen(text)
  text += 'x'.repeat(1000 - base)
  t.equal(seen(text), 1000)
  const ok = buildUpstream('batch-send', { batch: [{ type: 'identify', userId: 'v' }, item(text)], context, integrations }, limits)
  t.equal(ok.events, 2)

  const error = tooLarge(() => buildUpstream('batch-send', { batch: [{ type: 'identify', userId: 'v' }, item(text + 'x')], context, integrations }, limits))
  t.match(error.extras, { limit: 1000, size: 1001, index: 1 })
  t.equal(error.extras.largestFields?.[0]?.path, '/properties')
  t.ok(error.extras.largestFields!.some((field) => field.path === '/integrations'), 'the merged fields count')

  // Without the batch context the same item is well under the limit.
  t.equal(buildUpstream('batch-send', { batch: [item(text + 'x')] }, limits).events, 1)
})

t.test('the whole batch body at its limit passes; one byte over is 413', async (t) => {
  const keyed = { ...options, idempotencyKey: 'k', maxBatchBytes: 5000 }
  const items = (last: string) => [
    { type: 'track', userId: 'u', event: 'small' },
    { type: 'track', userId: 'u', event: 'big', properties: { text: '🎉'.repeat(300) } },
    { type: 'track', userId: 'u', event: 'last', properties: { text: last } }
  ]
  const base = buildUpstream('batch-send', { batch: items('') }, keyed).bytes
  const fill = 'é'.repeat(Math.floor((5000 - base) / 2)) + 'x'.repeat((5000 - base) % 2)
  const built = buildUpstream('batch-send', { batch: items(fill) }, keyed)
  t.equal(built.bytes, 5000)
  t.equal(Buffer.byteLength(built.render(sentAt)), 5000)

  const error = tooLarge(() => buildUpstream('batch-send', { batch: items(fill + 'x') }, keyed))
  t.match(error.extras, { limit: 5000, size: 5001 })
  t.notOk('index' in error.extras, 'no single item is the cause')
  t.same(error.extras.largestFields?.map((field) => field.path), ['/batch/2', '/batch/1', '/batch/0'])
})

t.test('JSON Pointer escaping in largestFields', async (t) => {
  const error = tooLarge(() => buildUpstream('track-event', { userId: 'u', event: 'e', 'a/b~c': 'x'.repeat(500) }, { ...options, maxEventBytes: 300 }))
  t.equal(error.extras.largestFields?.[0]?.path, '/a~1b~0c')
})

t.test('a batch item over the limit on its own', async (t) => {
  const error = tooLarge(() => buildUpstream('batch-send', {
    batch: [{ type: 'identify', userId: 'u' }, { type: 'identify', userId: 'u' }, { type: 'identify', userId: 'u', traits: { bio: '🎉'.repeat(100) } }]
  }, { ...options, maxEventBytes: 300 }))
  t.match(error.extras, { limit: 300, index: 2 })
  t.same(error.extras.largestFields?.[0], { path: '/traits', bytes: Buffer.byteLength(JSON.stringify({ bio: '🎉'.repeat(100) })) })
})

t.test('sentAt must render in 24 characters', async (t) => {
  const built = buildUpstream('identify-user', { userId: 'u' }, options)
  t.throws(() => built.render(new Date('+010000-01-01T00:00:00.000Z')), RangeError)
})
