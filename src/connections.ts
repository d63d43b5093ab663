import { LRUCache } from 'lru-cache'
import type { Config } from './config.js'
import { AppError } from './errors.js'
import type { ConnectionView, CreateConnectionInput, OAuthInput } from './connection-schemas.js'
import { newId } from './ids.js'
import { privateKeyProblem, type OAuthSource } from './segment/oauth.js'
import { DecryptError, connectionAad, oauthKeyAad, type KeyRing } from './store/crypto.js'
import type { ConnectionPatch, ConnectionRecord, OAuthRecord, Store } from './store/store.js'

export const PASSWORD_WARNING = 'password is documentation only: Segment authenticates with the Write Key as the Basic username and a blank password, so the value was neither stored nor sent'

/** A connection ready to send: where, and with which (decrypted) Write Key. */
export interface ResolvedConnection {
  record: ConnectionRecord
  baseUrl: string
  writeKey: string
  /** Set on OAuth sources: what a token request needs (the private key opened only when one is fetched). */
  oauth?: OAuthSource
}

/** At most the last 4 characters, fewer for short keys, so the hint never gives away much of a key. */
export function writeKeyHint (writeKey: string): string {
  const shown = Math.min(4, Math.floor(writeKey.length / 4))
  return `…${writeKey.slice(writeKey.length - shown)}`
}

/**
 * Names as every store can hold them: a lone surrogate is not Unicode (a UTF-8 store replaces it
 * on write, SQLite even with three U+FFFD) and PostgreSQL refuses NUL in text. Both become U+FFFD
 * before storing, so the answer to a write and every later read agree, on either store.
 */
export function storableText (text: string): string {
  return (text as unknown as { toWellFormed: () => string }).toWellFormed().replaceAll('\u0000', '\uFFFD')
}

function hasControlCharacter (text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x20 || code === 0x7f) return true
  }
  return false
}

function warningsFor (password: string | undefined): string[] | undefined {
  return password !== undefined && password !== '' ? [PASSWORD_WARNING] : undefined
}

export function toView (record: ConnectionRecord, warnings?: string[]): ConnectionView {
  return {
    id: record.id,
    name: record.name,
    region: record.region,
    ...(record.endpoint === null ? {} : { endpoint: record.endpoint }),
    writeKeyHint: record.writeKeyHint,
    ...(record.oauth === undefined ? {} : { oauth: { clientId: record.oauth.clientId, keyId: record.oauth.keyId } }),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    ...(warnings === undefined ? {} : { warnings })
  }
}

/**
 * Opened Write Keys, keyed by everything that went into opening them: the associated data
 * (workspace and connection), the key id and the sealed bytes. Every rotation or rewrap writes new
 * sealed bytes (a fresh nonce), so the next request misses and opens the new ciphertext: this saves
 * the AES-GCM work, never a store read. A ciphertext copied into another row has other associated
 * data, so it misses too and fails to open as before. Bounded in count and in age, so keys of
 * deleted connections leave memory.
 */
const OPENED_KEYS_MAX = 10_000
const OPENED_KEY_TTL_MS = 10 * 60_000

/** Connections of one workspace at a time: every method takes the workspace, so no id crosses tenants. */
export class ConnectionService {
  readonly #store: Store
  readonly #ring: KeyRing
  readonly #segment: Config['segment']
  readonly #opened: LRUCache<string, string>

  constructor (store: Store, ring: KeyRing, segment: Config['segment']) {
    this.#store = store
    this.#ring = ring
    this.#segment = segment
    // ttlAutopurge: an expired key leaves memory on its own, not only when it is looked up again.
    this.#opened = new LRUCache({ max: OPENED_KEYS_MAX, ttl: OPENED_KEY_TTL_MS, ttlAutopurge: true })
  }

  /**
   * The allowlisted origin a custom endpoint names. WHATWG URL parsing normalises case, default
   * ports and numeric IP forms first; then only an exact origin match with no credentials, path,
   * query or fragment passes, so `https://api.segment.io@elsewhere` or `https://api.segment.io.`
   * never match an allowlisted `https://api.segment.io`.
   */
  allowedEndpoint (endpoint: string, path = '/endpoint'): string {
    let url: URL | undefined
    try {
      url = new URL(endpoint)
    } catch {}
    // The host as typed must already be canonical: numeric IP spellings (decimal, hex,
    // IPv4-mapped IPv6) are refused even when they normalise to an allowed host.
    const typedHost = /^[a-z][a-z0-9+.-]*:\/\/(\[[^\]]*\]|[^/?#:]*)/i.exec(endpoint)?.[1]?.toLowerCase()
    const bare = url !== undefined && url.username === '' && url.password === '' &&
      (url.pathname === '/' || url.pathname === '') && url.search === '' && url.hash === '' &&
      // URL parsing drops leading and trailing C0 controls (NUL included) and every tab or newline.
      !endpoint.includes('@') && !/\s/.test(endpoint) && !hasControlCharacter(endpoint) && typedHost === url.hostname
    if (url === undefined || !bare || !this.#segment.allowedEndpoints.includes(url.origin)) {
      throw new AppError('endpoint_not_allowed', 'endpoint is not in the operator\'s SEGMENT_ALLOWED_ENDPOINTS', {
        errors: [{ path, message: 'must be one of the base URLs the operator allowed' }]
      })
    }
    return url.origin
  }

  async create (workspaceId: string, input: CreateConnectionInput): Promise<ConnectionView> {
    const endpoint = input.endpoint === undefined ? null : this.allowedEndpoint(input.endpoint)
    const id = newId('con')
    const oauth = input.oauth === undefined ? undefined : this.#sealOAuth(workspaceId, id, input.oauth, '/oauth')
    const now = new Date().toISOString()
    const record: ConnectionRecord = {
      id,
      workspaceId,
      name: storableText(input.name),
      region: input.region ?? 'us',
      endpoint,
      writeKeyHint: writeKeyHint(input.writeKey),
      secret: this.#ring.seal(input.writeKey, connectionAad(workspaceId, id)),
      ...(oauth === undefined ? {} : { oauth }),
      createdAt: now,
      updatedAt: now
    }
    await this.#store.createConnection(record)
    return toView(record, warningsFor(input.password))
  }

  async list (workspaceId: string): Promise<ConnectionView[]> {
    return (await this.#store.listConnections(workspaceId)).map((record) => toView(record))
  }

  async get (workspaceId: string, id: string): Promise<ConnectionView> {
    return toView(await this.#record(workspaceId, id))
  }

  async update (workspaceId: string, id: string, patch: ConnectionPatch): Promise<ConnectionView> {
    const checked: ConnectionPatch = { ...patch }
    if (typeof patch.name === 'string') checked.name = storableText(patch.name)
    if (typeof patch.endpoint === 'string') checked.endpoint = this.allowedEndpoint(patch.endpoint)
    const record = await this.#store.updateConnection(workspaceId, id, checked, new Date().toISOString())
    if (record === undefined) throw notFound()
    return toView(record)
  }

  async rotateWriteKey (workspaceId: string, id: string, writeKey: string, password?: string): Promise<ConnectionView> {
    const secret = this.#ring.seal(writeKey, connectionAad(workspaceId, id))
    const record = await this.#store.replaceWriteKey(workspaceId, id, secret, writeKeyHint(writeKey), new Date().toISOString())
    if (record === undefined) throw notFound()
    return toView(record, warningsFor(password))
  }

  /** Sets or rotates the OAuth credentials; the caller forgets the connection's cached token. */
  async setOAuth (workspaceId: string, id: string, input: OAuthInput): Promise<ConnectionView> {
    const oauth = this.#sealOAuth(workspaceId, id, input, '')
    const record = await this.#store.replaceOAuth(workspaceId, id, oauth, new Date().toISOString())
    if (record === undefined) throw notFound()
    return toView(record)
  }

  /** Removes the OAuth credentials (calls go back to Basic auth); a connection without them is left as it is. */
  async removeOAuth (workspaceId: string, id: string): Promise<ConnectionView> {
    const record = await this.#store.replaceOAuth(workspaceId, id, null, new Date().toISOString())
    if (record === undefined) throw notFound()
    return toView(record)
  }

  async delete (workspaceId: string, id: string): Promise<void> {
    if (!await this.#store.deleteConnection(workspaceId, id)) throw notFound()
  }

  /**
   * A connection row read for this request (by the store's findTokenWithConnection, say) made
   * ready to send; 404 when there was none. The endpoint is checked against today's allowlist.
   */
  ready (record: ConnectionRecord | null | undefined): ResolvedConnection {
    if (record === null || record === undefined) throw notFound()
    const baseUrl = record.endpoint === null ? this.#segment.baseUrls[record.region] : this.allowedEndpoint(record.endpoint)
    const resolved: ResolvedConnection = { record, baseUrl, writeKey: this.#open(record) }
    if (record.oauth !== undefined) resolved.oauth = this.#oauthSource(record, record.oauth)
    return resolved
  }

  /** What a token request of this connection needs; a custom token server must still be allowlisted. */
  #oauthSource (record: ConnectionRecord, oauth: OAuthRecord): OAuthSource {
    return {
      connectionId: record.id,
      clientId: oauth.clientId,
      keyId: oauth.keyId,
      authServer: oauth.authServer === null ? this.#segment.oauthUrls[record.region] : this.allowedEndpoint(oauth.authServer, '/oauth/authServer'),
      sealed: oauth.privateKey.sealed,
      privateKey: () => this.#openSealed(oauth.privateKey, oauthKeyAad(record.workspaceId, record.id), 'OAuth private key')
    }
  }

  /**
   * Checks OAuth credentials as given and seals the private key; `pointer` is where they sit in
   * the request body, for the 400's paths. The key is never quoted in an answer.
   */
  #sealOAuth (workspaceId: string, id: string, input: OAuthInput, pointer: string): OAuthRecord {
    const authServer = input.authServer === undefined ? null : this.allowedEndpoint(input.authServer, `${pointer}/authServer`)
    const problem = privateKeyProblem(input.privateKey)
    if (problem !== undefined) {
      throw new AppError('invalid_request', 'the OAuth private key is not a PKCS#8 PEM RSA private key', {
        errors: [{ path: `${pointer}/privateKey`, message: problem }]
      })
    }
    return {
      clientId: input.clientId,
      keyId: input.keyId,
      authServer,
      privateKey: this.#ring.seal(input.privateKey.trim(), oauthKeyAad(workspaceId, id))
    }
  }

  #open (record: ConnectionRecord): string {
    const aad = connectionAad(record.workspaceId, record.id)
    const { kid, sealed } = record.secret
    const key = `${aad}\0${kid}\0${sealed.toString('base64')}`
    let writeKey = this.#opened.get(key)
    if (writeKey === undefined) {
      writeKey = this.#openSealed(record.secret, aad, 'Write Key')
      this.#opened.set(key, writeKey)
    }
    return writeKey
  }

  #openSealed (secret: ConnectionRecord['secret'], aad: string, what: string): string {
    try {
      return this.#ring.open(secret, aad)
    } catch (error) {
      if (!(error instanceof DecryptError)) throw error
      // The operator's to fix (a key missing from ENCRYPTION_KEYS): nothing was sent.
      throw new AppError('key_unavailable', `this connection's ${what} cannot be decrypted with the configured keys; nothing was sent`, {}, undefined, { cause: error })
    }
  }

  async #record (workspaceId: string, id: string): Promise<ConnectionRecord> {
    const record = await this.#store.getConnection(workspaceId, id)
    if (record === undefined) throw notFound()
    return record
  }
}

function notFound (): AppError {
  return new AppError('connection_not_found', 'no such connection in this workspace')
}
