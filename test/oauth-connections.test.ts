// OAuth credentials on the connection routes: create, PUT (rotation), DELETE, what a Connection
// shows, and every way a private key is refused with a clear 400 that never quotes it.
import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { loadConfig } from '../src/config.js'
import { rewrap } from '../src/store/rewrap.js'
import { buildApp } from '../src/app.js'
import { build, createConnection, createWorkspace, resolveConnection } from './helper.js'
import { callAction } from './support/actions.js'
import { CLIENT_ID, KEY_ID, OAUTH_WRITE_KEY, setupOAuth, testKeys } from './support/oauth.js'

const pkcs8 = (key: ReturnType<typeof generateKeyPairSync>['privateKey']): string => key.export({ type: 'pkcs8', format: 'pem' }) as string

t.test('create, read, rotate, remove', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const keys = testKeys()
  const created = await app.inject({
    method: 'POST',
    url: '/v1/connections',
    headers: ws.auth,
    payload: { name: 'OAuth client', writeKey: OAUTH_WRITE_KEY, oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: keys.privateKey } }
  })
  t.equal(created.statusCode, 201, created.body)
  const view = created.json()
  t.same(view.oauth, { clientId: CLIENT_ID, keyId: KEY_ID }, 'clientId and keyId only')
  t.notOk(created.body.includes('PRIVATE KEY'), 'never the key')
  const list = await app.inject({ method: 'GET', url: '/v1/connections', headers: ws.auth })
  t.same(list.json().connections[0].oauth, { clientId: CLIENT_ID, keyId: KEY_ID })

  const resolved = await resolveConnection(app, ws.id, view.id)
  t.equal(resolved.oauth?.authServer, 'https://oauth2.segment.io', 'the US default token server')
  t.equal(resolved.oauth?.privateKey(), keys.privateKey.trim(), 'the key opens for a token request')

  const patched = await app.inject({ method: 'PATCH', url: `/v1/connections/${view.id}`, headers: ws.auth, payload: { region: 'eu' } })
  t.same(patched.json().oauth, view.oauth, 'a patch leaves OAuth alone')
  t.equal((await resolveConnection(app, ws.id, view.id)).oauth?.authServer, 'https://oauth2.eu1.segmentapis.com', 'the default follows the region')

  const other = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const put = await app.inject({ method: 'PUT', url: `/v1/connections/${view.id}/oauth`, headers: ws.auth, payload: { clientId: 'app-2', keyId: 'key-2', privateKey: pkcs8(other.privateKey) } })
  t.equal(put.statusCode, 200, put.body)
  t.same(put.json().oauth, { clientId: 'app-2', keyId: 'key-2' })
  t.equal((await resolveConnection(app, ws.id, view.id)).oauth?.privateKey(), pkcs8(other.privateKey).trim())

  const rotatedKey = await app.inject({ method: 'PUT', url: `/v1/connections/${view.id}/write-key`, headers: ws.auth, payload: { writeKey: 'wk_rotated_00001234' } })
  t.same(rotatedKey.json().oauth, { clientId: 'app-2', keyId: 'key-2' }, 'a Write Key rotation keeps OAuth')

  const removed = await app.inject({ method: 'DELETE', url: `/v1/connections/${view.id}/oauth`, headers: ws.auth })
  t.equal(removed.statusCode, 200)
  t.notOk('oauth' in removed.json())
  t.equal((await resolveConnection(app, ws.id, view.id)).oauth, undefined)
  const again = await app.inject({ method: 'DELETE', url: `/v1/connections/${view.id}/oauth`, headers: ws.auth })
  t.equal(again.statusCode, 200, 'removing twice is fine')

  // Another workspace's connection is a plain 404 on both routes.
  const intruder = await createWorkspace(app, 'Other agency')
  const theirs = await app.inject({ method: 'PUT', url: `/v1/connections/${view.id}/oauth`, headers: intruder.auth, payload: { clientId: 'a', keyId: 'b', privateKey: keys.privateKey } })
  t.equal(theirs.statusCode, 404)
  t.equal(theirs.json().code, 'connection_not_found')
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/connections/${view.id}/oauth`, headers: intruder.auth })).statusCode, 404)
  t.equal((await app.inject({ method: 'PUT', url: '/v1/connections/con_nope/oauth', headers: ws.auth, payload: { clientId: 'a', keyId: 'b', privateKey: keys.privateKey } })).statusCode, 404)
})

t.test('a private key that cannot sign RS256 assertions is a clear 400, never quoted', async (t) => {
  const { app } = await build(t)
  const ws = await createWorkspace(app)
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const cases: Record<string, { key: string, message: RegExp }> = {
    'PKCS#1': { key: rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, message: /PKCS#1.*openssl pkcs8 -topk8 -nocrypt/ },
    encrypted: { key: rsa.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }) as string, message: /must not be encrypted/ },
    'an EC key': { key: pkcs8(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey), message: /must be an RSA key.*ec/ },
    'an Ed25519 key': { key: pkcs8(generateKeyPairSync('ed25519').privateKey), message: /must be an RSA key/ },
    '1024 bits': { key: pkcs8(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), message: /at least 2048 bits.*1024/ },
    'a public key': { key: rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string, message: /must be a PKCS#8 PEM private key/ },
    'DER in base64 without armour': { key: (rsa.privateKey.export({ type: 'pkcs8', format: 'der' })).toString('base64'), message: /must be a PKCS#8 PEM private key/ },
    'a damaged body': { key: pkcs8(rsa.privateKey).replace(/\n[A-Za-z0-9+/]{20}/, '\nAAAAAAAAAAAAAAAAAAAA'), message: /readable|RSA|RS256/ },
    'text around it': { key: `my key:\n${pkcs8(rsa.privateKey)}`, message: /must be a PKCS#8 PEM private key/ }
  }
  for (const [label, { key, message }] of Object.entries(cases)) {
    const onCreate = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'x', writeKey: OAUTH_WRITE_KEY, oauth: { clientId: 'a', keyId: 'b', privateKey: key } } })
    t.equal(onCreate.statusCode, 400, `${label}: 400`)
    t.equal(onCreate.json().code, 'invalid_request')
    t.equal(onCreate.json().errors[0].path, '/oauth/privateKey')
    t.match(onCreate.json().errors[0].message, message, `${label}: ${String(onCreate.json().errors[0].message)}`)
    const body = key.split('\n').find((line) => line.length > 40) ?? key.slice(0, 40)
    t.notOk(onCreate.body.includes(body.slice(0, 24)), `${label}: the key is not quoted`)
  }
  const { id } = await createConnection(app, ws)
  const onPut = await app.inject({ method: 'PUT', url: `/v1/connections/${id}/oauth`, headers: ws.auth, payload: { clientId: 'a', keyId: 'b', privateKey: cases['PKCS#1']!.key } })
  t.match(onPut.json(), { status: 400, code: 'invalid_request', errors: [{ path: '/privateKey' }] })

  const shape = await app.inject({ method: 'POST', url: '/v1/connections', headers: ws.auth, payload: { name: 'x', writeKey: OAUTH_WRITE_KEY, oauth: { clientId: '', privateKey: 'k', extra: 1 } } })
  t.equal(shape.statusCode, 400)
  t.same([...new Set(shape.json().errors.map((e: { path: string }) => e.path))].sort(), ['/oauth/clientId', '/oauth/extra', '/oauth/keyId'])
  t.same((await app.inject({ method: 'GET', url: '/v1/connections', headers: ws.auth })).json().connections.length, 1, 'nothing was stored')
})

t.test('rewrap re-seals the private key: an app with only the new key still gets tokens', async (t) => {
  const first = 'k1:' + Buffer.alloc(32, 1).toString('base64')
  const second = 'k2:' + Buffer.alloc(32, 2).toString('base64')
  const { app, dbPath, oauth, fake, workspace, connectionId, config } = await setupOAuth(t, { ENCRYPTION_KEYS: first })
  await app.close()
  const both = loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, ENCRYPTION_KEYS: `${second},${first}` })
  const { SqliteStore } = await import('../src/store/sqlite.js')
  const { KeyRing } = await import('../src/store/crypto.js')
  const store = new SqliteStore(dbPath)
  const progress = await rewrap(store, new KeyRing(both.encryptionKeys!))
  await store.close()
  t.same(progress, { scanned: 2, rewrapped: 2, raced: 0, deliveries: 0, left: 0, leftRows: [], canaryCurrent: true }, 'the Write Key and the private key')

  const later = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, ENCRYPTION_KEYS: second, SEGMENT_API_URL: config.segment.baseUrls.us, SEGMENT_OAUTH_URL: oauth.url, LOG_LEVEL: 'silent' }))
  t.teardown(async () => { await later.close() })
  const response = await callAction(later, workspace, connectionId, 'track-event', { userId: 'u', event: 'e' })
  t.equal(response.statusCode, 200, response.body)
  t.equal(oauth.requests.at(-1)!.verdict, 'ok', 'signed with the key that rewrap re-sealed')
  t.equal(fake.requests.at(-1)!.headers.authorization, `Bearer ${String(oauth.issued.at(-1))}`)
})
