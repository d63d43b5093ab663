// Every 5xx answer of an action that may have reached Segment (segment_rejected,
// segment_unavailable, segment_timeout) names the messageId(s) that were sent, so a caller that
// resends without an Idempotency-Key can reuse them (design/api.md, Answers).
import t from 'tap'
import { GENERATED_ID, setupActions } from './support/actions.js'

const event = { userId: 'u1', event: 'Order Completed' }
const items = [
  { type: 'track', userId: 'u1', event: 'A' },
  { type: 'identify', userId: 'u1', messageId: 'caller-id-1' }
]

const sentIds = (body: unknown): string[] => 'batch' in (body as object)
  ? (body as { batch: Array<{ messageId: string }> }).batch.map((item) => item.messageId)
  : [(body as { messageId: string }).messageId]

const cases = [
  { code: 'segment_rejected', status: 502, env: {}, step: { status: 400, body: 'bad request' } },
  { code: 'segment_unavailable', status: 503, env: { SEGMENT_MAX_ATTEMPTS: '1' }, step: { status: 500 } },
  { code: 'segment_unavailable', status: 503, env: { SEGMENT_MAX_ATTEMPTS: '1' }, step: { reset: true } },
  // The deadline cuts the first attempt: no retry could start, Segment may have the event.
  { code: 'segment_timeout', status: 504, env: { SEGMENT_DEADLINE_MS: '300', SEGMENT_ATTEMPT_TIMEOUT_MS: '5000' }, step: { hang: true } }
] as const

for (const { code, status, env, step } of cases) {
  t.test(`${code} (Segment: ${JSON.stringify(step)}) names what was sent`, async (t) => {
    const { fake, send } = await setupActions(t, env)
    fake.respondWith([step, step])

    const single = await send('track-event', event)
    t.equal(single.statusCode, status)
    t.match(single.json(), { code, messageId: GENERATED_ID })
    t.notOk('messageIds' in single.json(), 'a single call names one messageId')
    t.same([single.json().messageId], sentIds(fake.requests[0]!.body), 'the id Segment received')

    const batch = await send('batch-send', { batch: items }, { headers: { 'idempotency-key': `k-${code}` } })
    t.equal(batch.statusCode, status)
    t.match(batch.json(), { code, messageIds: [GENERATED_ID, 'caller-id-1'] })
    t.notOk('messageId' in batch.json(), 'a batch names messageIds')
    t.notOk('count' in batch.json(), 'and nothing else of a 200')
    t.same(batch.json().messageIds, sentIds(fake.requests[1]!.body), 'the ids Segment received, in item order')
  })
}

t.test('errors before anything is sent name no messageId', async (t) => {
  const { fake, send } = await setupActions(t, { SEGMENT_MAX_EVENT_BYTES: '1000' })
  for (const answer of [
    await send('track-event', { userId: 'u1' }),
    await send('track-event', { ...event, properties: { blob: 'x'.repeat(2000) } })
  ]) {
    t.ok(answer.statusCode === 400 || answer.statusCode === 413)
    t.notOk('messageId' in answer.json())
  }
  t.equal(fake.requests.length, 0)
})
