// OAuth credentials in both stores (migration 3): stored, read back with every connection read,
// replaced and removed per workspace, and re-sealed by rewrap like the Write Keys.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { connectionAad, DecryptError, KeyRing, oauthKeyAad } from '../src/store/crypto.js'
import { PostgresStore } from '../src/store/postgres.js'
import { rewrap } from '../src/store/rewrap.js'
import { SqliteStore } from '../src/store/sqlite.js'
import type { ConnectionRecord, OAuthRecord, Store } from '../src/store/store.js'
import type { TestContext } from './helper.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'

const T0 = '2024-05-01T10:00:00.000Z'
const T1 = '2024-05-01T11:00:00.000Z'
const oldRing = new KeyRing([{ kid: 'old', key: randomBytes(32) }])
const newKey = { kid: 'new', key: randomBytes(32) }

const backends: Record<Store['kind'], (t: TestContext) => Promise<Store>> = {
  sqlite: async (t) => {
    const store = new SqliteStore(join(t.testdir(), 'store.db'))
    t.teardown(async () => await store.close())
    return store
  },
  postgres: async (t) => {
    const store = new PostgresStore({ kind: 'postgres', url: await freshPostgresUrl(t), poolSize: 2, timeoutMs: 5000 })
    t.teardown(async () => await store.close())
    return store
  }
}

function oauth (workspaceId: string, id: string, ring = oldRing, authServer: string | null = null): OAuthRecord {
  return { clientId: `app-of-${id}`, keyId: `key-of-${id}`, authServer, privateKey: ring.seal(`private-key-of-${id}`, oauthKeyAad(workspaceId, id)) }
}

function connection (workspaceId: string, id: string, withOAuth?: OAuthRecord): ConnectionRecord {
  return {
    id,
    workspaceId,
    name: id,
    region: 'us',
    endpoint: null,
    writeKeyHint: '…abcd',
    secret: oldRing.seal(`write-key-of-${id}`, connectionAad(workspaceId, id)),
    ...(withOAuth === undefined ? {} : { oauth: withOAuth }),
    createdAt: T0,
    updatedAt: T0
  }
}

for (const [kind, open] of Object.entries(backends)) {
  t.test(kind, { skip: kind === 'postgres' && postgresSkip }, async (t) => {
    const store = await open(t)
    await store.migrate()
    await store.createWorkspace({ id: 'ws_1', name: 'one', createdAt: T0 })
    await store.createWorkspace({ id: 'ws_2', name: 'two', createdAt: T0 })
    await store.createToken({ id: 'tok_1', workspaceId: 'ws_1', hash: 'hash-1', createdAt: T0 })
    const withOAuth = connection('ws_1', 'con_a', oauth('ws_1', 'con_a', oldRing, 'https://oauth.example.com'))
    const plain = connection('ws_1', 'con_b')
    await store.createConnection(withOAuth)
    await store.createConnection(plain)

    t.same(await store.getConnection('ws_1', 'con_a'), withOAuth, 'read back whole')
    t.notOk('oauth' in (await store.getConnection('ws_1', 'con_b'))!, 'no oauth key on a Write Key connection')
    t.same((await store.listConnections('ws_1')).map((c) => c.oauth?.clientId), ['app-of-con_a', undefined])
    t.same((await store.findTokenWithConnection('hash-1', 'con_a'))?.connection, withOAuth, 'in the action\'s joined read too')

    const set = oauth('ws_1', 'con_b')
    t.equal(await store.replaceOAuth('ws_2', 'con_b', set, T1), undefined, 'another workspace cannot set it')
    const updated = await store.replaceOAuth('ws_1', 'con_b', set, T1)
    t.same(updated?.oauth, set)
    t.equal(updated?.updatedAt, T1)
    t.same((await store.getConnection('ws_1', 'con_b'))?.oauth, set)
    t.equal(await store.replaceOAuth('ws_1', 'con_nope', set, T1), undefined)

    t.same((await store.listSealedOAuth('', 10)).map((r) => r.id), ['con_a', 'con_b'])
    const removed = await store.replaceOAuth('ws_1', 'con_b', null, T1)
    t.notOk('oauth' in removed!, 'removed')
    t.same((await store.listSealedOAuth('', 10)).map((r) => r.id), ['con_a'], 'only OAuth sources are listed')
    t.same((await store.listSealedOAuth('con_a', 10)), [], 'paged by id')

    const sealed = withOAuth.oauth!.privateKey
    t.equal(await store.swapSealedOAuth('con_a', plain.secret, oldRing.seal('x', 'y')), false, 'compare-and-set: a stale value is not replaced')

    const ring = new KeyRing([newKey, oldRing.primary])
    const progress = await rewrap(store, ring)
    t.same(progress, { scanned: 3, rewrapped: 3, raced: 0, deliveries: 0, left: 0, leftRows: [], canaryCurrent: false }, 'two Write Keys and one private key (no canary in this store)')
    const after = await store.getConnection('ws_1', 'con_a')
    t.equal(after!.oauth!.privateKey.kid, 'new')
    t.notSame(after!.oauth!.privateKey.sealed, sealed)
    const newOnly = new KeyRing([newKey])
    t.equal(newOnly.open(after!.oauth!.privateKey, oauthKeyAad('ws_1', 'con_a')), 'private-key-of-con_a', 'opens with the new key alone')
    t.throws(() => newOnly.open(after!.oauth!.privateKey, connectionAad('ws_1', 'con_a')), DecryptError, 'not as a Write Key of the row')
    t.throws(() => newOnly.open(after!.secret, oauthKeyAad('ws_1', 'con_a')), DecryptError, 'nor the Write Key as a private key')
    t.same(await rewrap(store, ring), { scanned: 3, rewrapped: 0, raced: 0, deliveries: 0, left: 0, leftRows: [], canaryCurrent: false }, 'a rerun has nothing to do')
  })
}
