// A fake Segment OAuth token server on loopback, strict as the real one should be:
//
//   const oauth = await startFakeOAuth({ now: clock.now })   // or new FakeOAuth(); await oauth.start()
//   t.teardown(() => oauth.close())
//   const keys = oauthKeyPair()                             // an RSA key pair, PKCS#8 private key
//   oauth.register({ clientId: 'app-1', keyId: 'key-1', publicKey: keys.publicKey })
//   oauth.url                                               // the base URL: POST {url}/token; the assertion's aud
//   oauth.respondWith([{ status: 503 }])                    // script answers, as fake-segment.ts does
//   oauth.requests / oauth.issued                           // every token request, every token issued
//
// Every POST /token is checked whole, whatever the script says: a form of exactly grant_type,
// client_assertion_type, client_assertion and scope with their fixed values; an RS256 JWT whose
// header has typ JWT and the kid of a registered public key, signed by that key's private key;
// exactly the claims iss = sub = that key's client id, aud = this server's URL, iat, exp (after
// now, at most 60 s after iat, iat not in the future), and a jti never seen before. The verdict is
// recorded on the request. With no scripted step, a request that passes gets
// `200 {access_token, token_type, expires_in, scope}`; one that fails gets a 400 or 401 with an
// RFC 6749 `{error, error_description}`.
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { decodeProtectedHeader, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose'

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
const FORM_FIELDS = ['client_assertion', 'client_assertion_type', 'grant_type', 'scope']
const CLAIMS = ['aud', 'exp', 'iat', 'iss', 'jti', 'sub']

export interface OAuthKeyPair {
  /** PKCS#8 PEM, as a connection takes it. */
  privateKey: string
  /** SPKI PEM, as uploaded to Segment. */
  publicKeyPem: string
  publicKey: KeyObject
}

/** A fresh RSA key pair (2048 bits unless told). */
export function oauthKeyPair (modulusLength = 2048): OAuthKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength })
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    publicKey
  }
}

export interface FakeOAuthStep {
  status?: number
  headers?: Record<string, string>
  body?: string | object
  delayMs?: number
  reset?: boolean
  hang?: boolean
  /** Wait `delayMs`, then answer as with no step (verify and issue). */
  pass?: boolean
  /** Answer this status with the whole request body echoed back, as a careless server might (leak tests). */
  echoStatus?: number
}

export interface TokenRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
  rawBody: string
  form: Record<string, string>
  header?: ProtectedHeaderParameters
  claims?: JWTPayload
  /** 'ok', or why the request is refused (the error_description sent). */
  verdict: string
  /** The token issued for it, when one was. */
  token?: string
}

export interface FakeOAuthOptions {
  /** The clock the server checks iat and exp against (milliseconds); Date.now by default. */
  now?: () => number
  /** expires_in of issued tokens, seconds. */
  expiresIn?: number
}

export class FakeOAuth {
  readonly requests: TokenRequest[] = []
  readonly issued: string[] = []
  expiresIn: number
  readonly #now: () => number
  readonly #keys = new Map<string, { clientId: string, publicKey: KeyObject }>()
  readonly #jtis = new Set<string>()
  #script: FakeOAuthStep[] = []
  #server: Server | undefined
  #url: string | undefined
  readonly #timers = new Set<NodeJS.Timeout>()

  constructor (options: FakeOAuthOptions = {}) {
    this.#now = options.now ?? Date.now
    this.expiresIn = options.expiresIn ?? 3600
  }

  get url (): string {
    if (this.#url === undefined) throw new Error('FakeOAuth is not started')
    return this.#url
  }

  /** Accepts assertions signed with `publicKey`'s private key under `keyId`, for `clientId`. */
  register ({ clientId, keyId, publicKey }: { clientId: string, keyId: string, publicKey: KeyObject }): void {
    this.#keys.set(keyId, { clientId, publicKey })
  }

  /** Forgets a public key, as deleting it in Segment does. */
  revoke (keyId: string): void {
    this.#keys.delete(keyId)
  }

  respondWith (steps: FakeOAuthStep[]): void {
    this.#script.push(...steps)
  }

  async start (): Promise<string> {
    const server = createServer((request, response) => {
      const chunks: Buffer[] = []
      request.on('data', (chunk: Buffer) => chunks.push(chunk))
      request.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString('utf8')
        this.#handle(request.method ?? '', request.url ?? '', request.headers, rawBody, request.socket, response)
          .catch((error: unknown) => { response.destroy(error as Error) })
      })
    })
    server.keepAliveTimeout = 1000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve())
    })
    this.#server = server
    this.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    return this.#url
  }

  async close (): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    const server = this.#server
    if (server === undefined) return
    this.#server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeAllConnections()
    await closed
  }

  async #handle (method: string, url: string, headers: IncomingHttpHeaders, rawBody: string, socket: Socket, response: ServerResponse): Promise<void> {
    const form = Object.fromEntries(new URLSearchParams(rawBody))
    const record: TokenRequest = { method, url, headers, rawBody, form, verdict: 'pending' }
    const refusal = await this.#verify(record)
    record.verdict = refusal?.description ?? 'ok'
    this.requests.push(record)
    const step = this.#script.shift()
    const answer = (): void => {
      if (refusal !== undefined) {
        send(response, this.#now(), refusal.status, { error: refusal.error, error_description: refusal.description })
        return
      }
      const token = `fake-at-${randomBytes(24).toString('base64url')}`
      record.token = token
      this.issued.push(token)
      send(response, this.#now(), 200, { access_token: token, token_type: 'Bearer', expires_in: this.expiresIn, scope: 'tracking_api:write' })
    }
    if (step === undefined) return answer()
    const play = (): void => {
      if (step.hang === true) return
      if (step.reset === true) {
        socket.resetAndDestroy()
        return
      }
      if (step.pass === true) return answer()
      if (step.echoStatus !== undefined) {
        send(response, this.#now(), step.echoStatus, { error: 'invalid_client', error_description: `refused ${rawBody}`, assertion: record.form.client_assertion })
        return
      }
      send(response, this.#now(), step.status ?? 200, step.body ?? '', step.headers)
    }
    if (step.delayMs !== undefined && step.delayMs > 0) {
      const timer = setTimeout(() => { this.#timers.delete(timer); play() }, step.delayMs)
      this.#timers.add(timer)
    } else {
      play()
    }
  }

  /** Undefined when the request is a valid token request; the refusal otherwise. */
  async #verify (record: TokenRequest): Promise<{ status: number, error: string, description: string } | undefined> {
    const invalid = (description: string, error = 'invalid_request', status = 400) => ({ status, error, description })
    if (record.method !== 'POST' || record.url !== '/token') return invalid(`${record.method} ${record.url} is not POST /token`)
    if (record.headers['content-type'] !== 'application/x-www-form-urlencoded') return invalid(`content-type ${String(record.headers['content-type'])}`)
    const fields = Object.keys(record.form).sort()
    if (fields.join() !== FORM_FIELDS.join()) return invalid(`form fields ${fields.join()}`)
    if (record.form.grant_type !== 'client_credentials') return invalid('grant_type', 'unsupported_grant_type')
    if (record.form.client_assertion_type !== ASSERTION_TYPE) return invalid('client_assertion_type')
    if (record.form.scope !== 'tracking_api:write') return invalid('scope', 'invalid_scope')
    const assertion = record.form.client_assertion ?? ''
    let header: ProtectedHeaderParameters
    try {
      header = decodeProtectedHeader(assertion)
    } catch {
      return invalid('the assertion is not a JWS', 'invalid_client', 401)
    }
    record.header = header
    if (Object.keys(header).sort().join() !== 'alg,kid,typ' || header.alg !== 'RS256' || header.typ !== 'JWT') {
      return invalid(`header ${JSON.stringify(header)}`, 'invalid_client', 401)
    }
    const key = this.#keys.get(String(header.kid))
    if (key === undefined) return invalid('unknown kid', 'invalid_client', 401)
    let claims: JWTPayload
    try {
      ({ payload: claims } = await jwtVerify(assertion, key.publicKey, {
        algorithms: ['RS256'],
        typ: 'JWT',
        issuer: key.clientId,
        subject: key.clientId,
        audience: this.url,
        currentDate: new Date(this.#now()),
        requiredClaims: ['iat', 'exp', 'jti']
      }))
    } catch (error) {
      return invalid(`assertion refused: ${(error as Error).message}`, 'invalid_client', 401)
    }
    record.claims = claims
    const now = Math.floor(this.#now() / 1000)
    if (Object.keys(claims).sort().join() !== CLAIMS.join()) return invalid(`claims ${Object.keys(claims).sort().join()}`, 'invalid_client', 401)
    if (claims.aud !== this.url) return invalid('aud must be the URL itself, not a list', 'invalid_client', 401)
    const { iat, exp, jti } = claims as { iat: number, exp: number, jti: unknown }
    // NumericDate (RFC 7519 § 2) may be fractional: Segment's library sends fractions after a clock correction.
    if (!Number.isFinite(iat) || !Number.isFinite(exp)) return invalid('iat and exp must be numbers', 'invalid_client', 401)
    if (iat > now + 5) return invalid('Token used before issued', 'invalid_request')
    if (exp - iat > 60) return invalid('exp is more than 60 s after iat', 'invalid_client', 401)
    if (typeof jti !== 'string' || jti === '') return invalid('jti', 'invalid_client', 401)
    if (this.#jtis.has(jti)) return invalid('jti replayed', 'invalid_grant')
    this.#jtis.add(jti)
    return undefined
  }
}

function send (response: ServerResponse, now: number, status: number, body: string | object, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  // The server's own clock, as a real server's Date header tells it.
  response.writeHead(status, { date: new Date(now).toUTCString(), 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json', ...headers })
  response.end(text)
}

export async function startFakeOAuth (options: FakeOAuthOptions = {}): Promise<FakeOAuth> {
  const fake = new FakeOAuth(options)
  await fake.start()
  return fake
}

/** A clock a test moves by hand. */
export class ManualClock {
  #at: number
  constructor (start = Date.now()) { this.#at = start }
  readonly now = (): number => this.#at
  advance (ms: number): void { this.#at += ms }
}
