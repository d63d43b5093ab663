import t from 'tap'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { connectionAad, KeyRing } from '../src/store/crypto.js'
import { rewrap } from '../src/store/rewrap.js'
import { SqliteStore } from '../src/store/sqlite.js'
import type { Store } from '../src/store/store.js'

t.test('rewrap re-seals a row that a rotation changed between its read and its swap', async (t) => {
  const store = new SqliteStore(join(t.testdir(), 'race.db'))
  t.teardown(async () => { await store.close() })
  await store.migrate()
  const oldKey = { kid: 'old', key: randomBytes(32) }
  const oldRing = new KeyRing([oldKey])
  const newRing = new KeyRing([{ kid: 'new', key: randomBytes(32) }, oldKey])
  const now = new Date().toISOString()
  await store.createWorkspace({ id: 'ws_1', name: 'A', createdAt: now })
  const aad = connectionAad('ws_1', 'con_1')
  await store.createConnection({
    id: 'con_1',
    workspaceId: 'ws_1',
    name: 'c',
    region: 'us',
    endpoint: null,
    writeKeyHint: '…k0',
    secret: oldRing.seal('write-key-0', aad),
    createdAt: now,
    updatedAt: now
  })

  // A replica still on the old ring rotates the Write Key just before rewrap's first swap lands.
  let rotated = false
  const racing = new Proxy(store, {
    get (target, property) {
      if (property === 'swapSealed') {
        return async (...args: Parameters<Store['swapSealed']>) => {
          if (!rotated) {
            rotated = true
            await target.replaceWriteKey('ws_1', 'con_1', oldRing.seal('write-key-1', aad), '…y-1', new Date().toISOString())
          }
          return await target.swapSealed(...args)
        }
      }
      const value = Reflect.get(target, property) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    }
  })

  const progress = await rewrap(racing, newRing)
  t.same(progress, { scanned: 1, rewrapped: 1, raced: 1, deliveries: 0, left: 0, leftRows: [], canaryCurrent: false }, 'no canary in this store')
  const row = await store.getConnection('ws_1', 'con_1')
  t.equal(row?.secret.kid, 'new', 'the rotated value was re-sealed under the new key')
  t.equal(new KeyRing([newRing.primary]).open(row!.secret, aad), 'write-key-1', 'and the rotation was not lost')
})
