// The idempotency module on a real store: the body fingerprint, and the purge that keeps up.
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { bodyFingerprint, Idempotency } from '../src/idempotency.js'
import { SqliteStore } from '../src/store/sqlite.js'

const scope = { workspaceId: 'ws_1', connectionId: 'con_1', action: 'track-event', key: 'k1' }

t.test('the fingerprint: the same JSON matches, anything else does not', async (t) => {
  const body = { userId: 'u1', event: 'E', properties: { a: 1, b: [1, { y: 2, x: 1 }] } }
  const base = bodyFingerprint(scope, body)
  t.match(base, /^[0-9a-f]{64}$/)
  t.equal(bodyFingerprint(scope, JSON.parse('{"properties":{"b":[1,{"x":1,"y":2}],"a":1.0},"event":"E","userId":"u1"}')), base, 'key order, number spelling')
  t.equal(bodyFingerprint(scope, { ...body, sentAt: '2024-01-01T00:00:00.000Z' }), base, 'a top-level sentAt does not count')
  t.not(bodyFingerprint(scope, { ...body, properties: { ...body.properties, sentAt: 'x' } }), base, 'a sentAt inside properties does')
  t.not(bodyFingerprint(scope, { ...body, properties: { a: 1, b: [{ y: 2, x: 1 }, 1] } }), base, 'array order counts')
  t.not(bodyFingerprint(scope, { ...body, event: 'F' }), base)
  for (const other of [{ workspaceId: 'ws_2' }, { connectionId: 'con_2' }, { action: 'page-view' }, { key: 'k2' }]) {
    t.not(bodyFingerprint({ ...scope, ...other }, body), base, `another scope: ${JSON.stringify(other)}`)
  }

  const batchScope = { ...scope, action: 'batch-send' }
  const batch = { batch: [{ type: 'track', userId: 'u1', event: 'A' }], context: { ip: '1.2.3.4' } }
  const batchBase = bodyFingerprint(batchScope, batch)
  t.equal(bodyFingerprint(batchScope, { ...batch, batch: [{ ...batch.batch[0], sentAt: '2024-01-01T00:00:00.000Z' }] }), batchBase, 'an item\'s sentAt does not count')
  t.not(bodyFingerprint(batchScope, { ...batch, context: { ip: '1.2.3.4', sentAt: 'x' } }), batchBase, 'one in the batch context does')
})

t.test('a full purge batch means more are waiting: the next keyed request purges again', async (t) => {
  const store = new SqliteStore(join(t.testdir(), 'store.db'))
  t.teardown(async () => await store.close())
  await store.migrate()
  const past = Date.now() - 60_000
  // Five keys left running by a replica that died a minute ago: their leases have run out.
  for (let i = 0; i < 5; i++) {
    await store.claimIdempotencyKey({ workspaceId: 'ws_x', connectionId: 'con_x', action: 'track-event', keyHash: `dead-${i}` }, 'fp', 'dead', past, past + 1000)
  }
  const live = async (): Promise<number> => {
    let count = 0
    for (let i = 0; i < 5; i++) {
      const id = { workspaceId: 'ws_x', connectionId: 'con_x', action: 'track-event', keyHash: `dead-${i}` }
      // Probing at the dead rows' own time: a row still there is "running" then.
      const claim = await store.claimIdempotencyKey(id, 'fp', 'probe', past + 1, past + 2)
      if (claim.claimed) await store.releaseIdempotencyKey(id, 'probe')
      else count++
    }
    return count
  }
  t.equal(await live(), 5)

  const idempotency = new Idempotency(store, { leaseMs: 10_000, purgeLimit: 2 })
  const log = pino({ level: 'silent' })
  const request = async (key: string): Promise<void> => {
    const started = await idempotency.start({ ...scope, key }, { userId: 'u1', event: 'E' }, log)
    if (started.replay !== undefined) throw new Error('unexpected replay')
    await idempotency.complete(started.ticket, { bytes: 10, attempts: 1, upstreamStatus: 200 }, log)
  }
  await request('a')
  t.equal(await live(), 3, 'the first keyed request purged a batch of 2')
  await request('b')
  t.equal(await live(), 1, 'the batch was full, so the next one purged again')
  await request('c')
  t.equal(await live(), 0, 'and the next the last one')
  await request('d')
  t.same(await idempotency.start({ ...scope, key: 'a' }, { userId: 'u1', event: 'E' }, log), { replay: { bytes: 10, attempts: 1, upstreamStatus: 200 } }, 'live keys are kept')
})
