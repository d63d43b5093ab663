// The store's Idempotency-Key rows on both stores, with explicit clocks: claim, lease, complete,
// release, expiry, the bounded purge, and (PostgreSQL) concurrent claims from several pools.
import { join } from 'node:path'
import t from 'tap'
import { PostgresStore } from '../src/store/postgres.js'
import { SqliteStore } from '../src/store/sqlite.js'
import type { IdempotencyKeyId, Store } from '../src/store/store.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'

interface TestContext {
  testdir: () => string
  teardown: (fn: () => unknown) => void
}

const T = 1_700_000_000_000
const LEASE = 45_000
const DAY = 86_400_000

const backends: Record<Store['kind'], (t: TestContext) => Promise<Store>> = {
  sqlite: async (t) => {
    const store = new SqliteStore(join(t.testdir(), 'store.db'))
    t.teardown(async () => await store.close())
    await store.migrate()
    return store
  },
  postgres: async (t) => {
    const store = new PostgresStore({ kind: 'postgres', url: await freshPostgresUrl(t), poolSize: 4, timeoutMs: 5000 })
    t.teardown(async () => await store.close())
    await store.migrate()
    return store
  }
}

const id = (keyHash: string, over: Partial<IdempotencyKeyId> = {}): IdempotencyKeyId =>
  ({ workspaceId: 'ws_1', connectionId: 'con_1', action: 'track-event', keyHash, ...over })

for (const [kind, open] of Object.entries(backends)) {
  t.test(kind, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    t.test('claim, then running, then done with its answer', async (t) => {
      const store = await open(t)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-a', T, T + LEASE), { claimed: true })
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-b', T + 1, T + 1 + LEASE), { claimed: false, state: 'running', fingerprint: 'fp1' })
      t.same(await store.claimIdempotencyKey(id('k'), 'fp2', 'owner-b', T + 1, T + 1 + LEASE), { claimed: false, state: 'running', fingerprint: 'fp1' }, 'the stored fingerprint, whatever the claim\'s')
      t.equal(await store.completeIdempotencyKey(id('k'), 'owner-b', '{"x":1}', T + DAY), false, 'only the owner completes')
      t.equal(await store.releaseIdempotencyKey(id('k'), 'owner-b'), false, 'only the owner releases')
      t.equal(await store.completeIdempotencyKey(id('k'), 'owner-a', '{"bytes":1}', T + DAY), true)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-c', T + 2, T + 2 + LEASE), { claimed: false, state: 'done', fingerprint: 'fp1', answer: '{"bytes":1}' })
      t.equal(await store.releaseIdempotencyKey(id('k'), 'owner-a'), false, 'a done key is not released by its old owner')
      t.equal(await store.completeIdempotencyKey(id('k'), 'owner-a', '{"bytes":2}', T + DAY), false, 'nor completed twice')
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-c', T + DAY - 1, T + DAY - 1 + LEASE), { claimed: false, state: 'done', fingerprint: 'fp1', answer: '{"bytes":1}' }, 'remembered until it expires')
      t.same(await store.claimIdempotencyKey(id('k'), 'fp9', 'owner-c', T + DAY, T + DAY + LEASE), { claimed: true }, 'expired: claimed anew, with any body')
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-d', T + DAY + 1, T + DAY + 1 + LEASE), { claimed: false, state: 'running', fingerprint: 'fp9' })
    })

    t.test('a released key is free at once', async (t) => {
      const store = await open(t)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'owner-a', T, T + LEASE), { claimed: true })
      t.equal(await store.releaseIdempotencyKey(id('k'), 'owner-a'), true)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp2', 'owner-b', T + 1, T + 1 + LEASE), { claimed: true })
    })

    t.test('a running key whose lease ran out (its replica died) is taken over; the old owner can no longer settle it', async (t) => {
      const store = await open(t)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'dead', T, T + LEASE), { claimed: true })
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'next', T + LEASE - 1, T + 2 * LEASE), { claimed: false, state: 'running', fingerprint: 'fp1' }, 'held until the lease ends')
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'next', T + LEASE, T + 2 * LEASE), { claimed: true }, 'taken over when it ends')
      t.equal(await store.completeIdempotencyKey(id('k'), 'dead', '{}', T + DAY), false)
      t.equal(await store.releaseIdempotencyKey(id('k'), 'dead'), false)
      t.equal(await store.completeIdempotencyKey(id('k'), 'next', '{"bytes":3}', T + DAY), true)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'other', T + LEASE + 1, T + 3 * LEASE), { claimed: false, state: 'done', fingerprint: 'fp1', answer: '{"bytes":3}' })
    })

    t.test('keys are per workspace, connection and action', async (t) => {
      const store = await open(t)
      t.same(await store.claimIdempotencyKey(id('k'), 'fp1', 'a', T, T + LEASE), { claimed: true })
      for (const over of [{ workspaceId: 'ws_2' }, { connectionId: 'con_2' }, { action: 'batch-send' }]) {
        t.same(await store.claimIdempotencyKey(id('k', over), 'fp2', 'b', T, T + LEASE), { claimed: true }, JSON.stringify(over))
        t.equal(await store.completeIdempotencyKey(id('k', over), 'a', '{}', T + DAY), false, 'owner a has no say there')
      }
    })

    t.test('purge deletes expired rows only, at most `limit` at a time, oldest first', async (t) => {
      const store = await open(t)
      for (let i = 0; i < 5; i++) {
        await store.claimIdempotencyKey(id(`done-${i}`), 'fp', `o${i}`, T, T + LEASE)
        await store.completeIdempotencyKey(id(`done-${i}`), `o${i}`, '{}', T + DAY + i)
      }
      await store.claimIdempotencyKey(id('running'), 'fp', 'r', T, T + LEASE)
      t.equal(await store.purgeIdempotencyKeys(T + LEASE - 1, 100), 0, 'nothing has expired yet')
      t.equal(await store.purgeIdempotencyKeys(T + DAY + 10, 2), 2, 'bounded')
      const left = async (): Promise<string[]> => {
        const live: string[] = []
        for (const key of ['running', ...[0, 1, 2, 3, 4].map((i) => `done-${i}`)]) {
          const claim = await store.claimIdempotencyKey(id(key), 'probe', 'probe', T + 1, T + 1)
          if (!claim.claimed) live.push(key)
          else await store.releaseIdempotencyKey(id(key), 'probe')
        }
        return live
      }
      // The running row (lease ended at T + LEASE) is the oldest, then done-0.
      t.same(await left(), ['done-1', 'done-2', 'done-3', 'done-4'], 'the oldest went first: the dead lease, then done-0')
      t.equal(await store.purgeIdempotencyKeys(T + DAY + 2, 100), 2, 'done-1 and done-2')
      t.same(await left(), ['done-3', 'done-4'])
      t.equal(await store.purgeIdempotencyKeys(T + DAY + 2, 100), 0)
    })
  })
}

t.test('postgres: concurrent claims of one key from several pools (replicas): exactly one wins', { skip: postgresSkip }, async (t) => {
  const url = await freshPostgresUrl(t)
  const stores = Array.from({ length: 4 }, () => new PostgresStore({ kind: 'postgres', url, poolSize: 4, timeoutMs: 5000 }))
  t.teardown(async () => { await Promise.all(stores.map(async (s) => await s.close())) })
  await stores[0]!.migrate()
  for (let round = 0; round < 5; round++) {
    const key = id(`race-${round}`)
    const claims = await Promise.all(Array.from({ length: 16 }, async (_, i) =>
      await stores[i % 4]!.claimIdempotencyKey(key, 'fp', `owner-${i}`, T, T + LEASE)))
    t.equal(claims.filter((c) => c.claimed).length, 1, `round ${round}: one claim`)
    t.equal(claims.filter((c) => !c.claimed && c.state === 'running').length, 15, 'the others see it running')
  }
  // Expired rows taken over concurrently: again exactly one.
  const key = id('race-0')
  const claims = await Promise.all(Array.from({ length: 16 }, async (_, i) =>
    await stores[i % 4]!.claimIdempotencyKey(key, 'fp', `late-${i}`, T + LEASE, T + 2 * LEASE)))
  t.equal(claims.filter((c) => c.claimed).length, 1, 'one takeover')
})
