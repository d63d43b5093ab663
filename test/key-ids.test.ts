// A Write Key sealed under a key id that ENCRYPTION_KEYS lacks: start-up and /readyz refuse, an
// action on it is a coded 503 key_unavailable, and rewrap names what it could not carry over.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { CANARY_META_KEY, connectionAad, KeyRing } from '../src/store/crypto.js'
import { REWRAP_TRIES, rewrap } from '../src/store/rewrap.js'
import { SqliteStore } from '../src/store/sqlite.js'
import type { Store } from '../src/store/store.js'
import { build, createConnection, createWorkspace } from './helper.js'
import { withoutCoverage } from './support/process.js'

const oldKey = { kid: 'old', key: randomBytes(32) }
const newKey = { kid: 'new', key: randomBytes(32) }
const env = (...keys: Array<typeof oldKey>): string => keys.map(({ kid, key }) => `${kid}:${key.toString('base64')}`).join(',')

async function openStore (t: { teardown: (fn: () => unknown) => void }, dbPath: string): Promise<SqliteStore> {
  const store = new SqliteStore(dbPath)
  t.teardown(async () => { await store.close() })
  await store.migrate()
  return store
}

t.test('a row left under a key the ring lacks: /readyz 503, the action 503 key_unavailable, start-up refused, rewrap names it', async (t) => {
  const first = await build(t, { ENCRYPTION_KEYS: env(oldKey) })
  const ws = await createWorkspace(first.app)
  const connection = await createConnection(first.app, ws, { writeKey: 'wk-first-0000000000' })
  await first.app.close()
  const store = await openStore(t, first.dbPath)
  const done = await rewrap(store, new KeyRing([newKey, oldKey]))
  t.match(done, { scanned: 1, rewrapped: 1, left: 0, canaryCurrent: true })

  const config = loadConfig({ DATABASE_URL: `sqlite:${first.dbPath}`, ENCRYPTION_KEYS: env(newKey), LOG_LEVEL: 'silent', ADMIN_TOKEN: 'x'.repeat(32) })
  const app = await buildApp(config)
  t.teardown(async () => { await app.close() })
  const url = `/v1/connections/${connection.id}/actions/track-event?dryRun=true`
  const track = { method: 'POST' as const, url, headers: ws.auth, payload: { userId: 'u1', event: 'E' } }
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'ready while every row opens')
  t.equal((await app.inject(track)).statusCode, 200)

  // A replica still on the old ring rotates the Write Key after the rewrap.
  const aad = connectionAad(ws.id, connection.id)
  await store.replaceWriteKey(ws.id, connection.id, new KeyRing([oldKey]).seal('wk-lagging-111111111', aad), '…1111', new Date().toISOString())

  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.match(ready.json(), { code: 'not_ready' })
  const refused = await app.inject(track)
  t.equal(refused.statusCode, 503)
  t.match(refused.headers['content-type'], /^application\/problem\+json/)
  t.match(refused.json(), { status: 503, code: 'key_unavailable', title: 'Encryption key unavailable' })
  t.notMatch(refused.body, /wk-lagging/, 'no key material in the answer')

  await t.rejects(buildApp(config), /key id "old", missing from ENCRYPTION_KEYS/, 'start-up refuses')

  const cli = (keys: string): ReturnType<typeof spawnSync> => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'rewrap'], {
    env: withoutCoverage({ ...process.env, DATABASE_URL: `sqlite:${first.dbPath}`, ENCRYPTION_KEYS: keys, LOG_LEVEL: 'silent' }), encoding: 'utf8'
  })
  const stuck = cli(env(newKey))
  t.equal(stuck.status, 1, 'rewrap without the old key exits non-zero')
  t.match(stuck.stderr, new RegExp(`connection ${connection.id} is still under its old key: no key "old"`), 'naming the row and why')
  t.match(stuck.stdout, /rewrap incomplete: 1 connections scanned, 0 re-encrypted under key "new", 1 left/)
  const fixed = cli(env(newKey, oldKey))
  t.equal(fixed.status, 0, String(fixed.stderr))
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'ready again once rewrap carried it over')
  t.equal((await app.inject(track)).statusCode, 200)
})

t.test('rewrap: the canary last, and not at all while a row keeps losing its race', async (t) => {
  const store = await openStore(t, `${t.testdir()}/race.db`)
  const oldRing = new KeyRing([oldKey])
  const newRing = new KeyRing([newKey, oldKey])
  await store.setMeta(CANARY_META_KEY, oldRing.seal('segment-forwarder canary', 'segment-forwarder/canary/v1'))
  const now = new Date().toISOString()
  await store.createWorkspace({ id: 'ws_1', name: 'A', createdAt: now })
  for (const id of ['con_1', 'con_2']) {
    await store.createConnection({ id, workspaceId: 'ws_1', name: id, region: 'us', endpoint: null, writeKeyHint: '…', secret: oldRing.seal(`wk-${id}`, connectionAad('ws_1', id)), createdAt: now, updatedAt: now })
  }

  // Every write is recorded in order; at first con_2 is rotated by a replica on the old ring
  // before each of its swaps, so every swap of it loses.
  const writes: string[] = []
  let racing = true
  const recorded = new Proxy(store, {
    get (target, property) {
      if (property === 'swapSealed') {
        return async (...args: Parameters<Store['swapSealed']>) => {
          if (racing && args[0] === 'con_2') await target.replaceWriteKey('ws_1', 'con_2', oldRing.seal('wk-rotated', connectionAad('ws_1', 'con_2')), '…', new Date().toISOString())
          writes.push(`swap ${args[0]}`)
          return await target.swapSealed(...args)
        }
      }
      if (property === 'setMeta') {
        return async (...args: Parameters<Store['setMeta']>) => {
          writes.push('canary')
          return await target.setMeta(...args)
        }
      }
      const value = Reflect.get(target, property) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    }
  })

  const lost = await rewrap(recorded, newRing)
  t.match(lost, { scanned: 2, rewrapped: 1, raced: REWRAP_TRIES, left: 1, leftRows: [{ id: 'con_2', reason: /concurrent rotations/ }], canaryCurrent: false })
  t.notOk(writes.includes('canary'), 'the canary stays under the old key while a row needs it')
  t.equal((await store.getMeta(CANARY_META_KEY))?.kid, 'old')

  racing = false
  writes.length = 0
  const clean = await rewrap(recorded, newRing)
  t.match(clean, { left: 0, canaryCurrent: true })
  t.same(writes, ['swap con_2', 'canary'], 'rows first, the canary last')
  t.equal((await store.getMeta(CANARY_META_KEY))?.kid, 'new')
})
