import t from 'tap'
import { BatchAssembler, MAX_BATCH_EVENTS, batchBodyBytes, planBatches, type BatchPart } from '../src/segment/batcher.js'
import { buildUpstream } from '../src/segment/build.js'

type Json = Record<string, unknown>
const sentAt = new Date('2025-03-14T09:26:53.589Z')
const options = { workspaceId: 'ws_1', connectionId: 'con_1', maxEventBytes: 32000, maxBatchBytes: 500000 }
const part = (items: Json[]): BatchPart => ({ items: Buffer.from(items.map((item) => JSON.stringify(item)).join(',')), events: items.length })

t.test('the assembled body is the parts\' items in order, sized exactly', async (t) => {
  const assembler = new BatchAssembler({ maxBatchBytes: 10_000 })
  const parts = [part([{ type: 'track', n: 'é🎉' }]), part([{ type: 'identify', a: 1 }, { type: 'page', b: 2 }])]
  for (const p of parts) assembler.add(p)
  const body = assembler.render(sentAt)
  t.same(JSON.parse(body.toString('utf8')), { batch: [{ type: 'track', n: 'é🎉' }, { type: 'identify', a: 1 }, { type: 'page', b: 2 }], sentAt: sentAt.toISOString() })
  t.equal(body.length, assembler.bytes, 'bytes is the exact length')
  t.equal(assembler.events, 3)
  t.equal(batchBodyBytes(parts[0]!.items.length + parts[1]!.items.length, 2), body.length)
})

t.test('top-level fields shared by every part (an OAuth source\'s writeKey) are in the body and in its size', async (t) => {
  const one = part([{ type: 'track', event: 'é' }])
  const topLevel = { writeKey: 'wk_oauth_source' }
  const assembler = new BatchAssembler({ maxBatchBytes: 10_000, topLevel })
  assembler.add(one)
  assembler.add(one)
  const body = assembler.render(sentAt)
  t.same(JSON.parse(body.toString('utf8')), { batch: [{ type: 'track', event: 'é' }, { type: 'track', event: 'é' }], writeKey: 'wk_oauth_source', sentAt: sentAt.toISOString() })
  t.equal(body.length, assembler.bytes)
  const exact = assembler.bytes
  const tight = new BatchAssembler({ maxBatchBytes: exact, topLevel })
  tight.add(one)
  t.ok(tight.fits(one), 'the limit counts the shared fields: exactly full fits')
  const tooTight = new BatchAssembler({ maxBatchBytes: exact - 1, topLevel })
  tooTight.add(one)
  t.notOk(tooTight.fits(one))
  t.same(planBatches(['a', 'b'], () => one, { maxBatchBytes: exact - 1, topLevel }), [['a'], ['b']], 'the planner counts them too')
})

t.test('fits() holds the byte limit to the byte and the event limit to the event', async (t) => {
  const one = part([{ type: 'track', event: 'x' }])
  const exact = batchBodyBytes(one.items.length * 2, 2)
  const full = new BatchAssembler({ maxBatchBytes: exact })
  full.add(one)
  t.ok(full.fits(one), 'a body of exactly the limit fits')
  full.add(one)
  t.equal(full.render(sentAt).length, exact)
  const short = new BatchAssembler({ maxBatchBytes: exact - 1 })
  short.add(one)
  t.notOk(short.fits(one), 'one byte over does not')

  const counted = new BatchAssembler({ maxBatchBytes: Infinity, maxBatchEvents: 3 })
  counted.add(part([{ a: 1 }, { a: 2 }]))
  t.ok(counted.fits(part([{ a: 3 }])))
  t.notOk(counted.fits(part([{ a: 3 }, { a: 4 }])))
  t.equal(new BatchAssembler({ maxBatchBytes: Infinity }).fits({ items: Buffer.from('{}'), events: MAX_BATCH_EVENTS + 1 }), false, '2,500 events by default')
})

t.test('planBatches: in order, greedy, never splitting a part; unjoinable and oversized entries alone', async (t) => {
  const small = { id: 's', part: part([{ type: 'track', pad: 'x'.repeat(40) }]) }
  const limit = batchBodyBytes(small.part.items.length * 3, 3)
  const entries = [
    { ...small, id: 'a' }, { ...small, id: 'b' }, { id: 'lone', part: undefined }, { ...small, id: 'c' },
    { ...small, id: 'd' }, { id: 'huge', part: part([{ type: 'track', pad: 'x'.repeat(limit) }]) }, { ...small, id: 'e' }
  ]
  const plan = planBatches(entries, (entry) => entry.part, { maxBatchBytes: limit })
  t.same(plan.map((batch) => batch.map((entry) => entry.id)), [['lone'], ['a', 'b', 'c'], ['huge'], ['d', 'e']])
})

t.test('build: a single call as a batch item gets its type; a batch\'s top-level context and integrations move into its items', async (t) => {
  const single = buildUpstream('track-event', { userId: 'u', event: 'E', properties: { a: 'é' } }, options)
  const item = JSON.parse(single.part()!.items.toString('utf8')) as Json
  const alone = JSON.parse(single.render(sentAt).toString('utf8')) as Json
  const { sentAt: _sentAt, ...aloneEvent } = alone
  t.same(item, { type: 'track', ...aloneEvent }, 'the same event, with its type')
  t.equal(single.part(), single.part(), 'made once')
  const typed = buildUpstream('identify-user', { type: 'identify', userId: 'u' }, options)
  t.equal((JSON.parse(typed.part()!.items.toString('utf8')) as Json).type, 'identify', 'a given type is kept, not doubled')
  t.equal(typed.part()!.items.toString('utf8').split('"type"').length, 2)

  const plain = buildUpstream('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'E' }, { type: 'alias', previousId: 'a', userId: 'u' }] }, options)
  const plainItems = JSON.parse(`[${plain.part()!.items.toString('utf8')}]`) as Json[]
  t.same(plainItems, (JSON.parse(plain.render(sentAt).toString('utf8')) as { batch: Json[] }).batch, 'without top-level fields, its items as they are')
  t.equal(plain.part()!.events, 2)

  const merged = buildUpstream('batch-send', {
    batch: [{ type: 'track', userId: 'u', event: 'E', context: { ip: 'item' }, integrations: { A: false } }, { type: 'identify', userId: 'v' }],
    context: { ip: 'batch', locale: 'fr' },
    integrations: { A: true, B: true }
  }, options)
  const items = JSON.parse(`[${merged.part()!.items.toString('utf8')}]`) as Json[]
  t.same(items[0]!.context, { ip: 'item', locale: 'fr', library: (items[0]!.context as Json).library })
  t.same(items[0]!.integrations, { A: false, B: true }, 'the item\'s own keys win')
  t.same(items[1]!.integrations, { A: true, B: true })
  t.same(items.map((i) => i.messageId), merged.messageIds, 'the same messageIds as its own body')

  const library = buildUpstream('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'E' }], context: { library: { name: 'wf', version: '2' } } }, options)
  t.same((JSON.parse(library.part()!.items.toString('utf8')) as Json).context, { library: { name: 'wf', version: '2' } }, 'the batch\'s library stands for its items')

  t.equal(buildUpstream('batch-send', { batch: [{ type: 'track', userId: 'u', event: 'E' }], other: 1 }, options).part(), undefined, 'other top-level fields: cannot join')
})
