import { EventEmitter } from 'node:events'
import { Pool, type Dispatcher } from 'undici'
import { AppError } from '../errors.js'
import { basicCredentials, type UpstreamCredentials } from './credentials.js'
import { backoffDelay, isRetryableStatus, parseRetryAfter } from './retry.js'

export interface SegmentClientOptions {
  /** Every attempt counts, the first included. */
  maxAttempts: number
  attemptTimeoutMs: number
  /** Time budget of one send(), counted from its start. */
  deadlineMs: number
  userAgent: string
  /** Makes the dispatcher for one origin; the client owns it and closes it in close(). Default: a keep-alive Pool. */
  dispatcher?: (origin: string) => Dispatcher
  /** Sockets per origin for the default Pool. */
  connections?: number
  /** For tests: the jitter source of the backoff. */
  random?: () => number
}

export interface SendRequest {
  baseUrl: string
  /** Segment path, e.g. `/v1/batch`. */
  path: string
  writeKey: string
  /** How to authenticate; Basic with `writeKey` when absent. OAuth sources pass oauth.ts's credentials. */
  credentials?: UpstreamCredentials
  /** Called once per attempt; same events and messageIds each time, only sentAt changes. */
  render: (sentAt: Date) => Buffer
  /** The caller gave up (e.g. the client disconnected): stop at once, rejecting with its reason. */
  signal?: CancelSignal | undefined
  /**
   * When the budget ends, in `performance.now()` time; `deadlineMs` after send() starts when left
   * out. Callers that waited before sending (coalescing) pass their own, counted from their arrival.
   */
  deadline?: number | undefined
}

export interface AttemptReport {
  /** 1 for the first attempt. */
  attempt: number
  status: number | 'error' | 'timeout'
  /** Why an attempt got no answer: the error code (ECONNRESET, ECONNREFUSED, ENOTFOUND, …) or 'timeout'. */
  error?: string
  durationMs: number
}

export interface SendHooks {
  onAttempt?: (report: AttemptReport) => void
}

export interface SendResult {
  upstreamStatus: number
  attempts: number
}

interface Target {
  origin: string
  path: string
}

type Outcome =
  | { kind: 'response', status: number, retryAfterMs: number | undefined, excerpt: string }
  | { kind: 'timeout' }
  | { kind: 'error', reason: string }

/** Retry-After (seconds) on a 503 when Segment named none: short, as our own retries were short. */
export const defaultRetryAfterSeconds = 2
const excerptChars = 200
const excerptBytes = 1024
// Read at most this much of an error body before dropping the connection instead.
const drainBytes = 64 * 1024

const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/**
 * Sends rendered bodies to Segment with the retry policy of design/api.md § Retries.
 *
 * Deadline rule: the deadline is `deadlineMs` after send() starts (or the caller's own, see
 * SendRequest.deadline). The first attempt always starts, with a timeout of min(attemptTimeoutMs,
 * what is left of the budget); when the deadline cuts it, send() fails with
 * segment_timeout (504). A retry starts only if its wait plus a whole attemptTimeoutMs fits before
 * the deadline, so it could finish in time; otherwise send() stops at once with segment_unavailable
 * (503, Retry-After) rather than sleeping or starting an attempt that the deadline would cut.
 * Redirects are never followed (undici's request does not), so a 3xx is segment_rejected.
 */
export class SegmentClient {
  readonly #options: SegmentClientOptions
  readonly #dispatchers = new Map<string, Dispatcher>()
  readonly #targets = new Map<string, Target>()
  #closed = false

  constructor (options: SegmentClientOptions) {
    this.#options = options
  }

  async send (request: SendRequest, hooks: SendHooks = {}): Promise<SendResult> {
    const { maxAttempts, attemptTimeoutMs, deadlineMs } = this.#options
    const deadline = request.deadline ?? performance.now() + deadlineMs
    const url = this.#target(request.baseUrl, request.path)
    const dispatcher = this.#dispatcher(url.origin)
    const credentials = request.credentials ?? basicCredentials(request.writeKey)
    // OAuth sources: a 401/403 drops the token and is retried once at once with a new one.
    const bearer = credentials.scheme === 'bearer'
    let refusedTokenRetried = false

    let lastStatus: number | undefined
    let lastRetryAfterMs: number | undefined
    for (let attempt = 1; ; attempt++) {
      const pendingAuthorization = credentials.authorization(deadline, request.signal)
      const authorization = typeof pendingAuthorization === 'string' ? pendingAuthorization : await pendingAuthorization
      // What is left of the budget, in whole ms (so a send that starts at once keeps all of it): a
      // token fetch, or waiting for company, may have used some. At least 1: a caller whose budget
      // is spent still gets its 504 from an attempt.
      const timeoutMs = Math.max(1, Math.min(attemptTimeoutMs, Math.ceil(deadline - performance.now())))
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        authorization,
        'user-agent': this.#options.userAgent
      }
      if (attempt > 1) headers['x-retry-count'] = String(attempt - 1)

      const started = performance.now()
      const outcome = await attemptOnce(dispatcher, {
        origin: url.origin,
        path: url.path,
        method: 'POST',
        headers,
        body: request.render(new Date()),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs
      }, timeoutMs, credentials.secrets, request.signal)
      hooks.onAttempt?.({
        attempt,
        status: outcome.kind === 'response' ? outcome.status : outcome.kind,
        ...(outcome.kind === 'error' ? { error: outcome.reason } : outcome.kind === 'timeout' ? { error: 'timeout' } : {}),
        durationMs: performance.now() - started
      })

      let failure: string
      let refusedToken = false
      if (outcome.kind === 'response') {
        const { status } = outcome
        if (status >= 200 && status < 300) return { upstreamStatus: status, attempts: attempt }
        if (bearer && (status === 401 || status === 403 || status === 511)) credentials.refused(authorization)
        refusedToken = bearer && (status === 401 || status === 403) && !refusedTokenRetried &&
          attempt < maxAttempts && performance.now() + attemptTimeoutMs <= deadline
        if (!refusedToken && !isRetryableStatus(status) && !(bearer && status === 511)) {
          throw new AppError('segment_rejected', `Segment answered ${status} to POST ${request.path}; retrying cannot fix it.`, {
            upstreamStatus: status, upstreamBody: outcome.excerpt, attempts: attempt
          })
        }
        lastStatus = status
        lastRetryAfterMs = outcome.retryAfterMs
        failure = `it answered ${status}`
      } else if (outcome.kind === 'timeout') {
        if (timeoutMs < attemptTimeoutMs) {
          throw new AppError('segment_timeout', `Segment did not answer within the ${deadlineMs} ms deadline.`, { attempts: attempt })
        }
        lastStatus = undefined
        lastRetryAfterMs = undefined
        failure = `no answer within ${attemptTimeoutMs} ms`
      } else {
        lastStatus = undefined
        lastRetryAfterMs = undefined
        failure = `connection failed (${outcome.reason})`
      }

      const unavailable = (why: string) => new AppError('segment_unavailable',
        `Segment is unavailable: ${why}; last, ${failure}.`,
        { ...(lastStatus === undefined ? {} : { upstreamStatus: lastStatus }), attempts: attempt },
        lastRetryAfterMs === undefined ? defaultRetryAfterSeconds : Math.max(1, Math.ceil(lastRetryAfterMs / 1000)))

      if (attempt >= maxAttempts) throw unavailable(`${attempt} attempt${attempt === 1 ? '' : 's'} failed`)
      if (refusedToken) refusedTokenRetried = true
      const waitMs = refusedToken ? 0 : lastRetryAfterMs ?? backoffDelay(attempt, this.#options.random)
      if (performance.now() + waitMs + attemptTimeoutMs > deadline) {
        throw unavailable(`no retry could finish within the ${deadlineMs} ms deadline after ${attempt} attempt${attempt === 1 ? '' : 's'}`)
      }
      if (waitMs > 0) await wait(waitMs, request.signal)
    }
  }

  /** Closes every dispatcher the client made; in-flight sends finish or time out first. */
  async close (): Promise<void> {
    this.#closed = true
    const dispatchers = [...new Set(this.#dispatchers.values())]
    this.#dispatchers.clear()
    await Promise.all(dispatchers.map((dispatcher) => dispatcher.close()))
  }

  /** Where a (base URL, path) pair points, parsed once: base URLs come from configuration. */
  #target (baseUrl: string, path: string): Target {
    const key = baseUrl + '\0' + path
    let target = this.#targets.get(key)
    if (target === undefined) {
      const url = new URL(baseUrl.replace(/\/+$/, '') + path)
      target = { origin: url.origin, path: url.pathname + url.search }
      // Bounded by the configured base URLs times six paths; the cap only guards against misuse.
      if (this.#targets.size >= 1000) this.#targets.clear()
      this.#targets.set(key, target)
    }
    return target
  }

  #dispatcher (origin: string): Dispatcher {
    if (this.#closed) throw new Error('SegmentClient is closed')
    let dispatcher = this.#dispatchers.get(origin)
    if (dispatcher === undefined) {
      const { attemptTimeoutMs } = this.#options
      dispatcher = this.#options.dispatcher?.(origin) ?? upstreamPool(origin, attemptTimeoutMs, this.#options.connections ?? 64)
      this.#dispatchers.set(origin, dispatcher)
    }
    return dispatcher
  }
}

/** A keep-alive pool to one upstream origin, no pipelining, every timeout bounded by the attempt's. */
export function upstreamPool (origin: string, attemptTimeoutMs: number, connections: number): Pool {
  return new Pool(origin, {
    connections,
    pipelining: 1,
    connectTimeout: Math.min(attemptTimeoutMs, 10_000),
    headersTimeout: attemptTimeoutMs,
    bodyTimeout: attemptTimeoutMs
  })
}

/**
 * A one-shot cancel signal: `aborted`, `reason` and an 'abort' event, the shape undici also takes
 * as its `signal`. On Node 20 an AbortController and its AbortSignal, plus the EventTarget listener
 * undici adds to it, cost about 10 µs of CPU per use (measured), this emitter well under 1 µs, so
 * each attempt and each request's "caller gone" signal uses one.
 */
export class Cancel extends EventEmitter {
  aborted = false
  reason: unknown = undefined

  abort (reason?: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.emit('abort')
  }
}

/** What send() takes from its caller to stop early: a Cancel or a standard AbortSignal. */
export type CancelSignal = Cancel | AbortSignal

// A function, not an inline test: TypeScript would keep the narrowing of an earlier check and
// miss that the signal can abort while an await is pending.
function isAborted (signal: CancelSignal | undefined): boolean {
  return signal?.aborted === true
}

/** Calls `listener` once when `signal` aborts; returns what removes it. */
export function onAbort (signal: CancelSignal | undefined, listener: () => void): () => void {
  if (signal === undefined) return () => {}
  if (signal instanceof Cancel) {
    signal.once('abort', listener)
    return () => { signal.off('abort', listener) }
  }
  signal.addEventListener('abort', listener, { once: true })
  return () => { signal.removeEventListener('abort', listener) }
}

/** One attempt; `options` is this attempt's own object, which gets the attempt's cancel signal. */
async function attemptOnce (dispatcher: Dispatcher, options: Dispatcher.RequestOptions, timeoutMs: number, secrets: () => string[], signal?: CancelSignal): Promise<Outcome> {
  if (isAborted(signal)) throw signal?.reason
  const cancel = new Cancel()
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; cancel.abort() }, timeoutMs)
  const stopListening = onAbort(signal, () => { cancel.abort(signal?.reason) })
  try {
    options.signal = cancel
    const response = await dispatcher.request(options)
    const { statusCode, headers, body } = response
    if (statusCode >= 200 && statusCode < 300) {
      await body.dump()
      return { kind: 'response', status: statusCode, retryAfterMs: undefined, excerpt: '' }
    }
    return {
      kind: 'response',
      status: statusCode,
      retryAfterMs: parseRetryAfter(headers['retry-after'], Date.now()),
      excerpt: await readExcerpt(body, secrets())
    }
  } catch (error) {
    if (isAborted(signal)) throw signal?.reason
    if (timedOut) return { kind: 'timeout' }
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && timeoutCodes.has(code)) return { kind: 'timeout' }
    return { kind: 'error', reason: failureReason(error) }
  } finally {
    clearTimeout(timer)
    stopListening()
  }
}

/**
 * The most telling code of a failed request: the system error under undici's own (a reset shows as
 * UND_ERR_SOCKET "other side closed" with, when the system saw one, ECONNRESET as its cause).
 */
function failureReason (error: unknown): string {
  const code = (error as { code?: unknown }).code
  const causeCode = ((error as { cause?: { code?: unknown } }).cause)?.code
  if (code === 'UND_ERR_SOCKET' && typeof causeCode === 'string') return causeCode
  if (typeof code === 'string') return code
  return typeof causeCode === 'string' ? causeCode : (error as Error).name
}

/** Sleeps `ms`; rejects at once with the caller's own reason when `signal` aborts, as an attempt does. */
async function wait (ms: number, signal?: CancelSignal): Promise<void> {
  if (isAborted(signal)) throw signal?.reason
  await new Promise<void>((resolve, reject) => {
    const stopListening = onAbort(signal, () => {
      clearTimeout(timer)
      reject(signal?.reason)
    })
    const timer = setTimeout(() => {
      stopListening()
      resolve()
    }, ms)
  })
}

/**
 * The start of an error body for the problem document, secrets removed; the rest is drained or
 * dropped. Redaction comes before any cut, so no cut can leave the start of a secret behind.
 */
async function readExcerpt (body: AsyncIterable<Buffer>, secrets: string[]): Promise<string> {
  const kept: Buffer[] = []
  let keptBytes = 0
  let seen = 0
  for await (const chunk of body) {
    if (keptBytes < excerptBytes) {
      kept.push(chunk)
      keptBytes += chunk.length
    }
    seen += chunk.length
    // Breaking out destroys the stream (and the socket): cheaper than reading a huge body.
    if (seen > drainBytes) break
  }
  let text = redact(Buffer.concat(kept).subarray(0, excerptBytes).toString('utf8'), secrets)
  if (seen > excerptBytes) {
    // A secret cut by the byte limit escapes redact(): drop the tail where its start could be.
    const longest = Math.max(0, ...secrets.map((secret) => secret.length))
    text = text.slice(0, Math.max(0, text.length - longest + 1))
  }
  text = text.trim()
  return text.length > excerptChars ? text.slice(0, excerptChars) + '…' : text
}

function redact (text: string, secrets: string[]): string {
  let out = text
  for (const secret of secrets) out = out.replaceAll(secret, '[redacted]')
  return out
}
