// OAuth sources (design/api.md § OAuth sources): access tokens by the client-credentials grant
// with an RS256 client assertion (RFC 7523, `private_key_jwt`), one cached token per connection,
// and the credentials an upstream request of such a source sends.
import { createPrivateKey, randomUUID } from 'node:crypto'
import { SignJWT, importPKCS8 } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Dispatcher } from 'undici'
import { AppError } from '../errors.js'
import { Cancel, defaultRetryAfterSeconds, upstreamPool, type CancelSignal } from './client.js'
import type { UpstreamCredentials } from './credentials.js'
import { backoffDelay, parseRetryAfter } from './retry.js'

export const OAUTH_SCOPE = 'tracking_api:write'
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
/** `iat` is set this far in the past, so a server whose clock is a little behind ours still takes it (as Segment's libraries do). */
export const ASSERTION_BACKDATE_SECONDS = 5
/** `exp` - `iat`: Segment takes assertions valid for at most 60 s. */
export const ASSERTION_LIFETIME_SECONDS = 60
/** A cached token is replaced this long before it expires (at most half its lifetime), so none expires mid-request. */
export const REFRESH_MARGIN_MS = 60_000

const PEM = /^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+\r?\n-----END PRIVATE KEY-----$/
// RFC 6749 § 5.2: an error code is ASCII without '"' or '\'. Anything else is not passed on.
const ERROR_CODE = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/
type SigningKey = Awaited<ReturnType<typeof importPKCS8>>
const MAX_RESPONSE_BYTES = 64 * 1024
const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/**
 * Why `pem` cannot sign our client assertions, or undefined when it can: a PKCS#8 PEM RSA private
 * key of at least 2048 bits (RS256), unencrypted. The messages never quote the key.
 */
export function privateKeyProblem (pem: string): string | undefined {
  const text = pem.trim()
  if (text.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) return 'must not be encrypted: give the unencrypted PKCS#8 PEM (openssl pkcs8 -topk8 -nocrypt)'
  if (text.includes('-----BEGIN RSA PRIVATE KEY-----')) return 'is PKCS#1 ("BEGIN RSA PRIVATE KEY"); convert it to PKCS#8 with: openssl pkcs8 -topk8 -nocrypt -in key.pem'
  if (!PEM.test(text)) return 'must be a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----)'
  let details: { type: string | undefined, bits: number }
  try {
    const key = createPrivateKey({ key: text, format: 'pem' })
    details = { type: key.asymmetricKeyType, bits: key.asymmetricKeyDetails?.modulusLength ?? 0 }
  } catch {
    return 'is not a readable PKCS#8 private key'
  }
  if (details.type !== 'rsa') return `must be an RSA key (RS256); this one is ${details.type ?? 'of an unknown type'}`
  if (details.bits < 2048) return `must be an RSA key of at least 2048 bits (RS256); this one has ${details.bits}`
  return undefined
}

/** What a token request needs from an OAuth source; ConnectionService.ready() makes it. */
export interface OAuthSource {
  connectionId: string
  clientId: string
  keyId: string
  /** The token server's base URL: the region's, or an allowlisted custom one. Also the assertion's `aud`. */
  authServer: string
  /** The private key's sealed bytes as stored: every rotation (and rewrap) writes new ones, which retires a cached token. */
  sealed: Buffer
  /** Opens the private key; called only when a token has to be fetched. */
  privateKey: () => string
}

export interface OAuthTokensOptions {
  /** Token requests per fetch, the first included (SEGMENT_MAX_ATTEMPTS). */
  maxAttempts: number
  attemptTimeoutMs: number
  userAgent: string
  /** Makes the dispatcher for one token server origin; owned and closed here. Default: a small keep-alive Pool. */
  dispatcher?: (origin: string) => Dispatcher
  /** Wall-clock milliseconds, for token expiry and the assertion's times (tests pass their own clock). */
  now?: () => number
  /** For tests: the jitter source of the backoff. */
  random?: () => number
}

interface CachedToken {
  value: string
  /** now() after which the token is no longer handed out. */
  refreshAt: number
}

/** One connection's token state, valid for exactly one set of credentials. */
interface Entry {
  clientId: string
  keyId: string
  authServer: string
  sealed: Buffer
  token?: CachedToken
  /** The fetch under way, shared by every caller that needs a token meanwhile (no stampede). */
  pending?: Promise<string>
  key?: Promise<SigningKey>
}

type Outcome =
  | { kind: 'response', status: number, retryAfterMs: number | undefined, body: string, date: number }
  | { kind: 'timeout' }
  | { kind: 'error', reason: string }

// As many as ConnectionService keeps opened Write Keys; an evicted entry only costs a new token.
const ENTRIES_MAX = 10_000

/**
 * Access tokens of OAuth sources: one per connection, cached until REFRESH_MARGIN_MS before it
 * expires, fetched once for all concurrent callers, dropped when the Tracking API refuses it.
 * Token requests follow the Tracking API's retry policy: 408, 429 and 5xx and connection failures
 * are retried while the caller's deadline allows; any other answer is final (segment_auth_failed).
 */
export class OAuthTokens {
  readonly #options: OAuthTokensOptions
  readonly #now: () => number
  readonly #entries = new LRUCache<string, Entry>({ max: ENTRIES_MAX })
  readonly #dispatchers = new Map<string, Dispatcher>()
  /** Per token server: how many seconds our clock is ahead of its `Date` header (assertion times follow its clock). */
  readonly #skewSeconds = new Map<string, number>()
  #closed = false

  constructor (options: OAuthTokensOptions) {
    this.#options = options
    this.#now = options.now ?? Date.now
  }

  /** The credentials of one upstream send of an OAuth source: a bearer token, and the Write Key to put in the body. */
  credentials (source: OAuthSource, writeKey: string): UpstreamCredentials {
    const handedOut: string[] = []
    return {
      scheme: 'bearer',
      authorization: async (deadline, signal) => {
        const token = await this.token(source, deadline, signal)
        handedOut.push(token)
        return 'Bearer ' + token
      },
      refused: (authorization) => { this.drop(source.connectionId, authorization.slice('Bearer '.length)) },
      secrets: () => [writeKey, ...handedOut].filter((s) => s.length > 0)
    }
  }

  /** A valid access token for `source`, fetched (before `deadline`, a performance.now() time) when none is cached. */
  async token (source: OAuthSource, deadline: number, signal?: CancelSignal): Promise<string> {
    const entry = this.#entry(source)
    const cached = entry.token
    if (cached !== undefined && this.#now() < cached.refreshAt) return cached.value
    if (entry.pending === undefined) {
      const pending = this.#fetch(entry, source, deadline).finally(() => {
        if (entry.pending === pending) entry.pending = undefined
      })
      // Callers that gave up (signal) leave it unawaited; its failure is theirs to see, not the process's.
      pending.catch(() => {})
      entry.pending = pending
    }
    return await untilAborted(entry.pending, signal)
  }

  /** The Tracking API refused `token`: the next caller fetches a new one (unless one already replaced it). */
  drop (connectionId: string, token: string): void {
    const entry = this.#entries.get(connectionId)
    if (entry?.token?.value === token) entry.token = undefined
  }

  /** The connection's credentials changed or went away (rotation, removal, delete): forget its token. */
  forget (connectionId: string): void {
    this.#entries.delete(connectionId)
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#entries.clear()
    const dispatchers = [...this.#dispatchers.values()]
    this.#dispatchers.clear()
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close()))
  }

  #entry (source: OAuthSource): Entry {
    let entry = this.#entries.get(source.connectionId)
    if (entry === undefined || entry.clientId !== source.clientId || entry.keyId !== source.keyId ||
      entry.authServer !== source.authServer || !entry.sealed.equals(source.sealed)) {
      // Other credentials than the cached token's: a rotation, possibly on another replica.
      entry = { clientId: source.clientId, keyId: source.keyId, authServer: source.authServer, sealed: source.sealed }
      this.#entries.set(source.connectionId, entry)
    }
    return entry
  }

  async #fetch (entry: Entry, source: OAuthSource, deadline: number): Promise<string> {
    const { maxAttempts, attemptTimeoutMs } = this.#options
    const origin = new URL(source.authServer).origin
    const dispatcher = this.#dispatcher(origin)
    const key = await this.#key(entry, source)
    let skewRetried = false
    for (let attempt = 1; ; attempt++) {
      const left = deadline - performance.now()
      const timeoutMs = Math.min(attemptTimeoutMs, left)
      if (timeoutMs <= 0) throw tokenTimeout()
      const requestedAt = this.#now()
      const skew = this.#skewSeconds.get(origin) ?? 0
      const assertion = await this.#assertion(key, source, requestedAt - skew * 1000)
      const outcome = await post(dispatcher, {
        origin,
        path: '/token',
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          'user-agent': this.#options.userAgent
        },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_assertion_type: CLIENT_ASSERTION_TYPE,
          client_assertion: assertion,
          scope: OAUTH_SCOPE
        }).toString(),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs
      }, timeoutMs)

      let failure: string
      let retryAfterMs: number | undefined
      let lastStatus: number | undefined
      if (outcome.kind === 'response') {
        const { status } = outcome
        // As Segment's libraries do: assertion times follow the server's clock as its Date header tells.
        // (A Date header has whole seconds: under 2 s apart counts as the same clock.)
        const seconds = (this.#now() - outcome.date) / 1000
        const serverSkew = !Number.isFinite(seconds) ? skew : Math.abs(seconds) < 2 ? 0 : Math.round(seconds)
        this.#skewSeconds.set(origin, serverSkew)
        if (status >= 200 && status < 300) {
          const token = parseToken(outcome.body)
          if (token === undefined) {
            throw new AppError('segment_auth_failed', `Segment's token endpoint answered ${status} without an access_token and expires_in.`, { upstreamStatus: status })
          }
          const lifetimeMs = token.expiresIn * 1000
          // Counted from when we asked, so the token never outlives what the server meant.
          entry.token = { value: token.accessToken, refreshAt: requestedAt + lifetimeMs - Math.min(REFRESH_MARGIN_MS, lifetimeMs / 2) }
          return token.accessToken
        }
        const final = !(status === 408 || status === 429 || (status >= 500 && status <= 599))
        if (final && status < 500 && !skewRetried && Math.abs(serverSkew - skew) >= ASSERTION_BACKDATE_SECONDS && attempt < maxAttempts) {
          // Refused, and our clock was off the server's by more than the backdating covers: once
          // more at once, with times on its clock ("Token used before issued", an expired assertion).
          skewRetried = true
          continue
        }
        if (final) {
          const code = errorCode(outcome.body)
          throw new AppError('segment_auth_failed',
            `Segment's token endpoint refused the client assertion (${status}${code === undefined ? '' : ` ${code}`}); check the OAuth app's client id, key id and public key in Segment.`,
            { upstreamStatus: status, ...(code === undefined ? {} : { oauthError: code }) })
        }
        lastStatus = status
        retryAfterMs = outcome.retryAfterMs
        failure = `it answered ${status}`
      } else if (outcome.kind === 'timeout') {
        if (timeoutMs < attemptTimeoutMs) throw tokenTimeout()
        failure = `no answer within ${attemptTimeoutMs} ms`
      } else {
        failure = `connection failed (${outcome.reason})`
      }
      const unavailable = (why: string): AppError => new AppError('segment_unavailable',
        `Segment's token endpoint is unavailable: ${why}; last, ${failure}.`,
        lastStatus === undefined ? {} : { upstreamStatus: lastStatus },
        retryAfterMs === undefined ? defaultRetryAfterSeconds : Math.max(1, Math.ceil(retryAfterMs / 1000)))
      if (attempt >= maxAttempts) throw unavailable(`${attempt} token request${attempt === 1 ? '' : 's'} failed`)
      const waitMs = retryAfterMs ?? backoffDelay(attempt, this.#options.random)
      if (performance.now() + waitMs + attemptTimeoutMs > deadline) throw unavailable('no retry could finish within the deadline')
      if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
    }
  }

  /** The private key, imported once per set of credentials. */
  async #key (entry: Entry, source: OAuthSource): Promise<SigningKey> {
    entry.key ??= importPKCS8(source.privateKey(), 'RS256')
    try {
      return await entry.key
    } catch (error) {
      entry.key = undefined
      throw error
    }
  }

  /** RFC 7523 § 3: iss = sub = the OAuth app, aud = the token server as configured, a fresh jti each time. */
  async #assertion (key: SigningKey, source: OAuthSource, now: number): Promise<string> {
    const iat = Math.floor(now / 1000) - ASSERTION_BACKDATE_SECONDS
    return await new SignJWT({
      iss: source.clientId,
      sub: source.clientId,
      aud: source.authServer,
      iat,
      exp: iat + ASSERTION_LIFETIME_SECONDS,
      jti: randomUUID()
    }).setProtectedHeader({ alg: 'RS256', kid: source.keyId, typ: 'JWT' }).sign(key)
  }

  #dispatcher (origin: string): Dispatcher {
    if (this.#closed) throw new Error('OAuthTokens is closed')
    let dispatcher = this.#dispatchers.get(origin)
    if (dispatcher === undefined) {
      const { attemptTimeoutMs } = this.#options
      // Token requests are rare (one per connection per token lifetime): a few sockets suffice.
      dispatcher = this.#options.dispatcher?.(origin) ?? upstreamPool(origin, attemptTimeoutMs, 4)
      this.#dispatchers.set(origin, dispatcher)
    }
    return dispatcher
  }
}

function tokenTimeout (): AppError {
  return new AppError('segment_timeout', 'Segment\'s token endpoint did not answer within the request deadline.')
}

async function post (dispatcher: Dispatcher, options: Dispatcher.RequestOptions, timeoutMs: number): Promise<Outcome> {
  const cancel = new Cancel()
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; cancel.abort() }, timeoutMs)
  try {
    options.signal = cancel
    const { statusCode, headers, body } = await dispatcher.request(options)
    return {
      kind: 'response',
      status: statusCode,
      retryAfterMs: parseRetryAfter(headers['retry-after'], Date.now()),
      date: typeof headers.date === 'string' ? Date.parse(headers.date) : Number.NaN,
      body: await readBounded(body)
    }
  } catch (error) {
    if (timedOut) return { kind: 'timeout' }
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && timeoutCodes.has(code)) return { kind: 'timeout' }
    return { kind: 'error', reason: typeof code === 'string' ? code : (error as Error).name }
  } finally {
    clearTimeout(timer)
  }
}

async function readBounded (body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > MAX_RESPONSE_BYTES) break
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function parseJson (text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** `{access_token, expires_in}` as Segment's token endpoint answers it (RFC 6749 § 5.1). */
function parseToken (text: string): { accessToken: string, expiresIn: number } | undefined {
  const json = parseJson(text)
  const accessToken = json?.access_token
  const expiresIn = json?.expires_in
  if (typeof accessToken !== 'string' || accessToken === '' || typeof expiresIn !== 'number' || !(expiresIn > 0)) return undefined
  return { accessToken, expiresIn }
}

/** The `error` code of a refusal (RFC 6749 § 5.2), when it is one; never the description, which may echo input. */
function errorCode (text: string): string | undefined {
  const code = parseJson(text)?.error
  return typeof code === 'string' && ERROR_CODE.test(code) ? code : undefined
}

/** `promise`, or the caller's own reason as soon as `signal` aborts (the shared fetch goes on for the others). */
async function untilAborted<T> (promise: Promise<T>, signal: CancelSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  if (signal.aborted) throw signal.reason
  let stop = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => {
    const listener = (): void => { reject(signal.reason) }
    if (signal instanceof Cancel) {
      signal.once('abort', listener)
      stop = () => { signal.off('abort', listener) }
    } else {
      signal.addEventListener('abort', listener, { once: true })
      stop = () => { signal.removeEventListener('abort', listener) }
    }
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    stop()
  }
}
