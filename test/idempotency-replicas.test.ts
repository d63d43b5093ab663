// Two replicas (two app instances) on one PostgreSQL database share their Idempotency-Keys: a
// key running on one is 409 on the other, a key finished on one replays on the other, another
// body is 422 on either, and an error on one leaves the key free for the other.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { AppDeps } from '../src/app.js'
import { build, createConnection, createWorkspace, type TestWorkspace } from './helper.js'
import { callAction, fakeSegment, GENERATED_ID, WRITE_KEY } from './support/actions.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'
import { upstreamGate } from './support/upstream-gate.js'

const event = { userId: 'u1', event: 'Order Completed', properties: { total: 3 } }
const key = (value: string) => ({ headers: { 'idempotency-key': value } })

async function twoReplicas (t: Test, depsA: AppDeps = {}, env: Record<string, string> = {}) {
  const fake = await fakeSegment(t)
  const shared = {
    DATABASE_URL: await freshPostgresUrl(t),
    ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
    SEGMENT_API_URL: fake.url,
    ...env
  }
  const a = (await build(t, shared, depsA)).app
  const b = (await build(t, shared)).app
  const workspace = await createWorkspace(a)
  const { id: connectionId } = await createConnection(a, workspace, { writeKey: WRITE_KEY })
  const on = (app: FastifyInstance) => async (payload: unknown, options: { headers?: Record<string, string> } = {}, as: TestWorkspace = workspace) =>
    await callAction(app, as, connectionId, 'track-event', payload, options)
  return { fake, a: on(a), b: on(b) }
}

t.test('a key running on one replica is 409 on the other; once done, it replays on both', { skip: postgresSkip }, async (t) => {
  const gate = upstreamGate()
  const { fake, a, b } = await twoReplicas(t, { dispatcher: gate.dispatcher })
  const first = a(event, key('k-shared'))
  await gate.arrived(1)
  const during = await b(event, key('k-shared'))
  t.equal(during.statusCode, 409)
  t.match(during.json(), { code: 'idempotency_key_in_use' })
  t.equal((await b({ ...event, event: 'Other' }, key('k-shared'))).statusCode, 422, 'another body: 422 on the other replica too')
  t.equal(fake.requests.length, 0)

  gate.open()
  const done = await first
  t.equal(done.statusCode, 200)
  t.match(done.json().messageId, GENERATED_ID)
  for (const [name, replica] of [['b', b], ['a', a]] as const) {
    const replay = await replica(event, key('k-shared'))
    t.equal(replay.statusCode, 200, `replica ${name}`)
    t.equal(replay.headers['idempotent-replayed'], 'true')
    t.same(replay.json(), done.json())
  }
  t.equal((await b({ ...event, event: 'Other' }, key('k-shared'))).statusCode, 422)
  t.equal(fake.requests.length, 1, 'sent once, by one replica')
})

t.test('an error on one replica leaves the key free for the other, with the same messageId', { skip: postgresSkip }, async (t) => {
  const { fake, a, b } = await twoReplicas(t, {}, { SEGMENT_MAX_ATTEMPTS: '1' })
  fake.respondWith([{ status: 503 }])
  const failed = await a(event, key('k-err'))
  t.equal(failed.statusCode, 503)
  t.match(failed.json(), { code: 'segment_unavailable', messageId: GENERATED_ID })
  const retried = await b(event, key('k-err'))
  t.equal(retried.statusCode, 200)
  t.equal(retried.headers['idempotent-replayed'], undefined)
  t.equal(retried.json().messageId, failed.json().messageId)
  t.equal((await a(event, key('k-err'))).headers['idempotent-replayed'], 'true')
  t.equal(fake.requests.length, 2)
})
