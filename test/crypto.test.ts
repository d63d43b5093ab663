import t from 'tap'
import { randomBytes } from 'node:crypto'
import Database from 'better-sqlite3'
import { connectionAad, DecryptError, KeyRing } from '../src/store/crypto.js'
import { build, createConnection, createWorkspace, resolveConnection } from './helper.js'
import { withoutCoverage } from './support/process.js'

const ring = new KeyRing([{ kid: 'k1', key: randomBytes(32) }])
const aad = connectionAad('ws_a', 'con_a')

t.test('round trip, fresh nonce each time', async (t) => {
  const a = ring.seal('write-key-é-🔑', aad)
  const b = ring.seal('write-key-é-🔑', aad)
  t.equal(a.kid, 'k1')
  t.equal(a.sealed.length, 12 + Buffer.byteLength('write-key-é-🔑') + 16, 'nonce, ciphertext and 16-byte tag')
  t.not(a.sealed.subarray(0, 12).toString('hex'), b.sealed.subarray(0, 12).toString('hex'), 'a fresh 96-bit nonce per encryption')
  t.equal(ring.open(a, aad), 'write-key-é-🔑')
})

t.test('every flipped byte of nonce, ciphertext and tag throws', async (t) => {
  const sealed = ring.seal('9f8e7d6c5b4a39281706f5e4d3c2b1a0', aad)
  let thrown = 0
  for (let i = 0; i < sealed.sealed.length; i++) {
    const tampered = Buffer.from(sealed.sealed)
    tampered[i] = tampered[i]! ^ 0x01
    try {
      ring.open({ kid: sealed.kid, sealed: tampered }, aad)
    } catch (error) {
      if (error instanceof DecryptError) thrown++
    }
  }
  t.equal(thrown, sealed.sealed.length, `all ${sealed.sealed.length} positions`)
  t.throws(() => ring.open({ kid: 'k1', sealed: sealed.sealed.subarray(0, 20) }, aad), DecryptError, 'truncated')
  t.throws(() => ring.open({ kid: 'k1', sealed: Buffer.alloc(0) }, aad), DecryptError, 'empty')
  t.throws(() => ring.open({ kid: 'nope', sealed: sealed.sealed }, aad), DecryptError, 'unknown key id')
  t.throws(() => ring.open(sealed, connectionAad('ws_a', 'con_b')), DecryptError, 'other associated data')
})

t.test('a ciphertext moved into another connection\'s row fails to decrypt', async (t) => {
  const { app, dbPath } = await build(t)
  const ws = await createWorkspace(app)
  const victim = await createConnection(app, ws, { writeKey: 'victim-key-aaaaaaaaaaaa' })
  const mover = await createConnection(app, ws, { writeKey: 'mover-key-bbbbbbbbbbbbb' })
  const db = new Database(dbPath)
  db.prepare('UPDATE connections SET write_key_sealed = (SELECT write_key_sealed FROM connections WHERE id = ?), key_id = (SELECT key_id FROM connections WHERE id = ?) WHERE id = ?')
    .run(victim.id, victim.id, mover.id)
  db.close()
  await t.rejects(resolveConnection(app, ws.id, mover.id), { code: 'key_unavailable', status: 503, cause: DecryptError })
  t.equal((await resolveConnection(app, ws.id, victim.id)).writeKey, 'victim-key-aaaaaaaaaaaa')
})

t.test('rotate ENCRYPTION_KEYS to new,old, rewrap, drop old: every connection readable', async (t) => {
  const { spawnSync } = await import('node:child_process')
  const oldKey = `old:${randomBytes(32).toString('base64')}`
  const newKey = `new:${randomBytes(32).toString('base64')}`
  const first = await build(t, { ENCRYPTION_KEYS: oldKey })
  const ws = await createWorkspace(first.app)
  const keys = Array.from({ length: 5 }, (_, i) => `write-key-${i}-${'x'.repeat(20)}`)
  const ids: string[] = []
  for (const writeKey of keys) ids.push((await createConnection(first.app, ws, { writeKey })).id)
  await first.app.close()

  const env = withoutCoverage({ ...process.env, DATABASE_URL: `sqlite:${first.dbPath}`, ENCRYPTION_KEYS: `${newKey},${oldKey}`, LOG_LEVEL: 'silent' })
  const run = (): ReturnType<typeof spawnSync> => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'rewrap'], { env, encoding: 'utf8' })
  const rewrap = run()
  t.equal(rewrap.status, 0, String(rewrap.stderr))
  t.match(String(rewrap.stdout), /5 connections scanned, 5 re-encrypted under key "new"/)
  t.match(String(rewrap.stderr), /rewrap: scanned 5/, 'shows progress')
  const again = run()
  t.match(String(again.stdout), /5 connections scanned, 0 re-encrypted/, 'rerunning is a no-op')

  const { buildApp } = await import('../src/app.js')
  const { loadConfig } = await import('../src/config.js')
  const onlyNew = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${first.dbPath}`, ENCRYPTION_KEYS: newKey, LOG_LEVEL: 'silent' }))
  t.teardown(async () => { await onlyNew.close() })
  for (const [i, id] of ids.entries()) {
    t.equal((await resolveConnection(onlyNew, ws.id, id)).writeKey, keys[i])
  }
  const ready = await onlyNew.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200, 'the canary was rewrapped too')
})

t.test('starting with keys that cannot open the stored data is refused', async (t) => {
  const first = await build(t, { ENCRYPTION_KEYS: `a:${randomBytes(32).toString('base64')}` })
  await first.app.close()
  const { buildApp } = await import('../src/app.js')
  const { loadConfig } = await import('../src/config.js')
  await t.rejects(buildApp(loadConfig({ DATABASE_URL: `sqlite:${first.dbPath}`, ENCRYPTION_KEYS: `b:${randomBytes(32).toString('base64')}`, LOG_LEVEL: 'silent' })),
    /ENCRYPTION_KEYS cannot open the data already stored/)
})
