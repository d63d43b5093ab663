import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { checkCanary, ensureCanary } from '../src/store/canary.js'
import { connectionAad, KeyRing } from '../src/store/crypto.js'
import { migrations } from '../src/store/migrations.js'
import { PostgresStore } from '../src/store/postgres.js'
import { rewrap } from '../src/store/rewrap.js'
import { SqliteStore } from '../src/store/sqlite.js'
import { StoreUnavailableError } from '../src/store/store.js'
import type { ConnectionRecord, SealedSecret, Store, TokenRecord, WorkspaceRecord } from '../src/store/store.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'

/** The subset of tap's Test that the helpers use. */
interface TestContext {
  testdir: () => string
  teardown: (fn: () => unknown) => void
}

const T0 = '2024-05-01T10:00:00.000Z'
const T1 = '2024-05-01T11:00:00.000Z'
const T2 = '2024-05-01T12:00:00.000Z'

async function openPostgres (t: TestContext, timeoutMs = 5000): Promise<{ store: PostgresStore, url: string }> {
  const url = await freshPostgresUrl(t)
  const store = new PostgresStore({ kind: 'postgres', url, poolSize: 4, timeoutMs })
  t.teardown(async () => await store.close())
  return { store, url }
}

const backends: Record<Store['kind'], (t: TestContext) => Promise<Store>> = {
  sqlite: async (t) => {
    const store = new SqliteStore(join(t.testdir(), 'store.db'))
    t.teardown(async () => await store.close())
    return store
  },
  postgres: async (t) => (await openPostgres(t)).store
}

function workspace (id: string, createdAt = T0): WorkspaceRecord {
  return { id, name: `name of ${id}`, createdAt }
}

function token (id: string, workspaceId: string): TokenRecord {
  return { id, workspaceId, hash: `hash-${id}`, createdAt: T0 }
}

const ring = new KeyRing([{ kid: 'k1', key: randomBytes(32) }])

function connection (workspaceId: string, id: string, createdAt = T0, keys = ring): ConnectionRecord {
  return {
    id,
    workspaceId,
    name: `name of ${id}`,
    region: 'us',
    endpoint: null,
    writeKeyHint: '…abcd',
    secret: keys.seal(`write-key-of-${id}`, connectionAad(workspaceId, id)),
    createdAt,
    updatedAt: createdAt
  }
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

for (const [kind, open] of Object.entries(backends)) {
  t.test(kind, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const migrated = async (t: TestContext): Promise<Store> => {
      const store = await open(t)
      await store.migrate()
      return store
    }

    t.test('migrating twice is a no-op', async (t) => {
      const store = await open(t)
      await store.migrate()
      await store.createWorkspace(workspace('ws_1'))
      await store.migrate()
      t.same(await store.listWorkspaces(), [workspace('ws_1')])
      await t.resolves(store.ping())
    })

    t.test('workspaces', async (t) => {
      const store = await migrated(t)
      // Same creation time: ids order by byte, upper case first.
      for (const ws of [workspace('ws_c', T1), workspace('ws_b', T0), workspace('ws_B', T0)]) await store.createWorkspace(ws)
      t.same(await store.listWorkspaces(), [workspace('ws_B', T0), workspace('ws_b', T0), workspace('ws_c', T1)])
      t.same(await store.getWorkspace('ws_b'), workspace('ws_b', T0))
      t.equal(await store.getWorkspace('ws_x'), undefined)
      const duplicate = await store.createWorkspace(workspace('ws_b')).then(() => undefined, (error: unknown) => error)
      t.ok(duplicate instanceof Error, 'a duplicate id is rejected')
      t.notOk(duplicate instanceof StoreUnavailableError, 'a constraint error is not an outage')
    })

    t.test('tokens', async (t) => {
      const store = await migrated(t)
      await store.createWorkspace(workspace('ws_1'))
      await store.createWorkspace(workspace('ws_2'))
      await store.createToken(token('tok_1', 'ws_1'))
      await store.createToken(token('tok_2', 'ws_1'))

      t.same(await store.findToken('hash-tok_1'), token('tok_1', 'ws_1'))
      t.equal(await store.findToken('hash-unknown'), undefined)

      t.equal(await store.revokeToken('ws_2', 'tok_1', T1), false, 'another workspace cannot revoke it')
      t.same(await store.findToken('hash-tok_1'), token('tok_1', 'ws_1'), 'still live')
      t.equal(await store.revokeToken('ws_1', 'tok_x', T1), false, 'unknown id')

      t.equal(await store.revokeToken('ws_1', 'tok_1', T1), true)
      t.equal(await store.findToken('hash-tok_1'), undefined, 'revoked tokens are not found')
      t.equal(await store.revokeToken('ws_1', 'tok_1', T2), false, 'only live tokens are revoked')
      t.same(await store.findToken('hash-tok_2'), token('tok_2', 'ws_1'), 'the other token is untouched')
    })

    t.test('connections', async (t) => {
      const store = await migrated(t)
      await store.createWorkspace(workspace('ws_1'))
      await store.createWorkspace(workspace('ws_2'))
      const late = connection('ws_1', 'con_a', T1)
      const early = connection('ws_1', 'con_z', T0)
      const tieUpper = connection('ws_1', 'con_Q', T1)
      const other = connection('ws_2', 'con_o', T0)
      for (const c of [late, early, tieUpper, other]) await store.createConnection(c)

      t.test('list and get', async (t) => {
        t.same(await store.listConnections('ws_1'), [early, tieUpper, late], 'by creation time, then id')
        t.same(await store.listConnections('ws_2'), [other])
        t.same(await store.listConnections('ws_x'), [])
        const got = await store.getConnection('ws_1', 'con_a')
        t.same(got, late)
        t.ok(Buffer.isBuffer(got?.secret.sealed), 'the sealed secret comes back as a Buffer')
        t.equal(ring.open(got!.secret, connectionAad('ws_1', 'con_a')), 'write-key-of-con_a')
        t.equal(await store.getConnection('ws_2', 'con_a'), undefined, "another workspace's id")
        t.equal(await store.getConnection('ws_1', 'con_x'), undefined)
      })

      t.test('findTokenWithConnection: the token and, in one read, a connection of its own workspace only', async (t) => {
        await store.createToken(token('tok_w1', 'ws_1'))
        await store.createToken(token('tok_w2', 'ws_2'))
        const mine = await store.findTokenWithConnection('hash-tok_w1', 'con_a')
        t.same(mine, { token: token('tok_w1', 'ws_1'), connection: late })
        t.ok(Buffer.isBuffer(mine?.connection?.secret.sealed), 'the sealed secret comes back as a Buffer')
        t.same(await store.findTokenWithConnection('hash-tok_w2', 'con_a'), { token: token('tok_w2', 'ws_2'), connection: undefined },
          "another workspace's connection id finds the token but no connection")
        t.same(await store.findTokenWithConnection('hash-tok_w1', 'con_x'), { token: token('tok_w1', 'ws_1'), connection: undefined }, 'unknown id')
        t.same(await store.findTokenWithConnection('hash-tok_w1', 'con_\u0000a'), { token: token('tok_w1', 'ws_1'), connection: undefined },
          'an id with NUL is simply unknown')
        t.equal(await store.findTokenWithConnection('hash-unknown', 'con_a'), undefined, 'unknown token')
        t.equal(await store.revokeToken('ws_1', 'tok_w1', T1), true)
        t.equal(await store.findTokenWithConnection('hash-tok_w1', 'con_a'), undefined, 'a revoked token finds nothing, connection included')
      })

      t.test('update', async (t) => {
        t.same(await store.updateConnection('ws_1', 'con_a', { name: 'renamed' }, T2), { ...late, name: 'renamed', updatedAt: T2 })
        t.same(await store.updateConnection('ws_1', 'con_a', { region: 'eu', endpoint: 'https://proxy.example' }, T2),
          { ...late, name: 'renamed', region: 'eu', endpoint: 'https://proxy.example', updatedAt: T2 })
        t.same(await store.updateConnection('ws_1', 'con_a', {}, T2),
          { ...late, name: 'renamed', region: 'eu', endpoint: 'https://proxy.example', updatedAt: T2 }, 'absent fields are kept')
        t.same(await store.updateConnection('ws_1', 'con_a', { endpoint: null }, T2),
          { ...late, name: 'renamed', region: 'eu', endpoint: null, updatedAt: T2 }, 'null removes the endpoint')

        t.equal(await store.updateConnection('ws_2', 'con_z', { name: 'stolen', endpoint: 'https://evil.example' }, T2), undefined)
        t.same(await store.getConnection('ws_1', 'con_z'), early, 'unchanged by another workspace')
        t.equal(await store.updateConnection('ws_1', 'con_x', { name: 'x' }, T2), undefined)
      })

      t.test('replaceWriteKey', async (t) => {
        const secret = ring.seal('new-write-key', connectionAad('ws_1', 'con_z'))
        t.same(await store.replaceWriteKey('ws_1', 'con_z', secret, '…wxyz', T2), { ...early, secret, writeKeyHint: '…wxyz', updatedAt: T2 })
        t.equal(await store.replaceWriteKey('ws_2', 'con_Q', secret, '…evil', T2), undefined)
        t.same(await store.getConnection('ws_1', 'con_Q'), tieUpper, 'unchanged by another workspace')
      })

      t.test('delete', async (t) => {
        t.equal(await store.deleteConnection('ws_2', 'con_Q'), false)
        t.same(await store.getConnection('ws_1', 'con_Q'), tieUpper, 'unchanged by another workspace')
        t.equal(await store.deleteConnection('ws_1', 'con_Q'), true)
        t.equal(await store.getConnection('ws_1', 'con_Q'), undefined)
        t.equal(await store.deleteConnection('ws_1', 'con_Q'), false, 'already gone')
      })
    })

    t.test('listSealed pages through every connection by id', async (t) => {
      const store = await migrated(t)
      await store.createWorkspace(workspace('ws_1'))
      await store.createWorkspace(workspace('ws_2'))
      const ids = ['con_5', 'con_1', 'con_4', 'con_2', 'con_3']
      const created = ids.map((id, i) => connection(i % 2 === 0 ? 'ws_1' : 'ws_2', id))
      for (const c of created) await store.createConnection(c)

      const pages: string[][] = []
      for (let after = ''; ;) {
        const page = await store.listSealed(after, 2)
        if (page.length === 0) break
        pages.push(page.map((row) => row.id))
        after = page.at(-1)!.id
      }
      t.same(pages, [['con_1', 'con_2'], ['con_3', 'con_4'], ['con_5']])
      const [first] = await store.listSealed('con_3', 1)
      const source = created.find((c) => c.id === 'con_4')!
      t.same(first, { id: 'con_4', workspaceId: source.workspaceId, secret: source.secret })
    })

    t.test('swapSealed is a compare-and-set', async (t) => {
      const store = await migrated(t)
      await store.createWorkspace(workspace('ws_1'))
      const c = connection('ws_1', 'con_1')
      await store.createConnection(c)
      const next: SealedSecret = { kid: 'k2', sealed: randomBytes(40) }

      t.equal(await store.swapSealed('con_1', { kid: c.secret.kid, sealed: randomBytes(40) }, next), false, 'stale bytes')
      t.equal(await store.swapSealed('con_1', { kid: 'k0', sealed: c.secret.sealed }, next), false, 'stale kid')
      t.equal(await store.swapSealed('con_x', c.secret, next), false, 'unknown id')
      t.same((await store.getConnection('ws_1', 'con_1'))?.secret, c.secret, 'unchanged')

      t.equal(await store.swapSealed('con_1', c.secret, next), true)
      t.same((await store.getConnection('ws_1', 'con_1'))?.secret, next)
      t.equal(await store.swapSealed('con_1', c.secret, c.secret), false, 'the old value is stale now')
    })

    t.test('setMeta inserts if absent, then compare-and-sets', async (t) => {
      const store = await migrated(t)
      const a: SealedSecret = { kid: 'k1', sealed: randomBytes(30) }
      const b: SealedSecret = { kid: 'k2', sealed: randomBytes(30) }
      const c: SealedSecret = { kid: 'k2', sealed: randomBytes(30) }
      t.equal(await store.getMeta('m'), undefined)
      t.equal(await store.setMeta('m', a), true)
      t.equal(await store.setMeta('m', b), false, 'no overwrite without expected')
      t.same(await store.getMeta('m'), a)
      t.equal(await store.setMeta('m', b, { kid: 'k1', sealed: c.sealed }), false, 'stale bytes')
      t.equal(await store.setMeta('m', b, { kid: 'k9', sealed: a.sealed }), false, 'stale kid')
      t.equal(await store.setMeta('missing', b, a), false, 'no row to swap')
      t.equal(await store.getMeta('missing'), undefined)
      t.same(await store.getMeta('m'), a)
      t.equal(await store.setMeta('m', b, a), true)
      t.same(await store.getMeta('m'), b)
    })

    t.test('rewrap moves every secret to the new key', async (t) => {
      const store = await migrated(t)
      const oldKey = { kid: 'old', key: randomBytes(32) }
      const newKey = { kid: 'new', key: randomBytes(32) }
      const oldRing = new KeyRing([oldKey])
      await ensureCanary(store, oldRing)
      await store.createWorkspace(workspace('ws_1'))
      await store.createWorkspace(workspace('ws_2'))
      const created = ['con_1', 'con_2', 'con_3'].map((id, i) => connection(i === 1 ? 'ws_2' : 'ws_1', id, T0, oldRing))
      for (const c of created) await store.createConnection(c)

      const progress = await rewrap(store, new KeyRing([newKey, oldKey]))
      t.same(progress, { scanned: 3, rewrapped: 3, raced: 0, deliveries: 0, left: 0, leftRows: [], canaryCurrent: true })

      const onlyNew = new KeyRing([newKey])
      await t.resolves(checkCanary(store, onlyNew), 'the canary opens with the new key alone')
      for (const c of created) {
        const stored = await store.getConnection(c.workspaceId, c.id)
        t.equal(stored?.secret.kid, 'new')
        t.equal(onlyNew.open(stored!.secret, connectionAad(c.workspaceId, c.id)), `write-key-of-${c.id}`)
      }
      t.same(await rewrap(store, new KeyRing([newKey, oldKey])), { scanned: 3, rewrapped: 0, raced: 0, deliveries: 0, left: 0, leftRows: [], canaryCurrent: true }, 'a rerun has nothing to do')
    })
  })
}

t.test('postgres only', { skip: postgresSkip }, async (t) => {
  t.test('replicas migrating together apply each version once', async (t) => {
    const url = await freshPostgresUrl(t)
    const stores = Array.from({ length: 4 }, () => new PostgresStore({ kind: 'postgres', url, poolSize: 2, timeoutMs: 5000 }))
    t.teardown(async () => { await Promise.all(stores.map(async (s) => await s.close())) })

    const results = await Promise.allSettled(stores.map(async (s) => await s.migrate()))
    t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])

    const client = new pg.Client({ connectionString: url })
    await client.connect()
    t.teardown(async () => await client.end())
    const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')
    t.same(rows.map((r) => r.version), migrations.map((m) => m.version))
    await stores[0]!.createWorkspace(workspace('ws_1'))
    t.same(await stores[3]!.listWorkspaces(), [workspace('ws_1')])
  })

  t.test('an unreachable server is StoreUnavailableError, not a crash', async (t) => {
    const url = `postgres://postgres@127.0.0.1:${await freePort()}/nothing`
    const store = new PostgresStore({ kind: 'postgres', url, poolSize: 2, timeoutMs: 1000 })
    t.teardown(async () => await store.close())
    for (const [name, call] of Object.entries({ ping: async () => await store.ping(), findToken: async () => await store.findToken('h'), migrate: async () => await store.migrate() })) {
      const error = await call().then(() => undefined, (e: unknown) => e)
      t.ok(error instanceof StoreUnavailableError, `${name} throws StoreUnavailableError`)
      t.ok((error as Error).cause, `${name} keeps the cause`)
    }
  })

  t.test('a statement past the timeout is StoreUnavailableError, and the pool carries on', async (t) => {
    const { store, url } = await openPostgres(t, 300)
    await store.migrate()
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(async () => await admin.end())
    await admin.query('BEGIN')
    await admin.query('LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE')
    const error = await store.findToken('h').then(() => undefined, (e: unknown) => e)
    t.ok(error instanceof StoreUnavailableError)
    t.match((error as Error).cause, { code: '57014' })
    await admin.query('ROLLBACK')
    t.equal(await store.findToken('h'), undefined, 'answers again once the lock is gone')
  })

  t.test('connections the server ended are replaced', async (t) => {
    const { store, url } = await openPostgres(t)
    await store.migrate()
    await Promise.all([store.ping(), store.ping(), store.ping()])
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(async () => await admin.end())
    const { rows } = await admin.query<{ ended: boolean }>(
      'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')
    t.ok(rows.length > 0 && rows.every((r) => r.ended), 'the pool connections were terminated')

    // A query may still meet a connection whose end the pool has not seen yet: at worst once per
    // pooled connection (4), each time as StoreUnavailableError.
    const outcomes: unknown[] = []
    for (let attempt = 0; attempt < 5 && outcomes.at(-1) !== 'answered'; attempt++) {
      outcomes.push(await store.findToken('h').then(() => 'answered', (e: unknown) => e instanceof StoreUnavailableError ? 'unavailable' : e))
    }
    t.same(outcomes, [...outcomes.slice(0, -1).map(() => 'unavailable'), 'answered'], 'the pool reconnects by itself')
    await t.resolves(store.ping())
  })
})
