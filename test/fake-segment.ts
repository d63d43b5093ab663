// A fake Segment Tracking API on loopback, for tests that send real HTTP.
//
//   const fake = await startFakeSegment()       // or: const fake = new FakeSegment(); await fake.start()
//   t.teardown(() => fake.close())
//   fake.url                                   // 'http://127.0.0.1:PORT', use as a base URL
//   fake.respondWith([{ status: 500 }, { status: 429, headers: { 'retry-after': '1' } }])
//   ... send ...
//   fake.requests                              // every request received, in order (see RecordedRequest)
//
// Each request takes the next step of the script queued by respondWith() (steps queue up across
// calls); with the queue empty it gets `200 {"success":true}`, as Segment answers. A step is:
//   { status?, headers?, body? }  answer that (status defaults to 200, body to {"success":true}
//                                  for 2xx and "" otherwise; an object body is sent as JSON)
//   { delayMs, ...answer }        wait first, then answer
//   { reset: true }               drop the connection (TCP RST) without answering
//   { hang: true }                never answer; close() frees the socket
//   { until: promise, ...answer } wait for the promise, then answer (holds a request in flight)
// `fake.decide = (request) => step | undefined` answers by content instead: a step it returns wins
// over the script (undefined: the script's next step, as usual).
// Requests are recorded (after their body is read) whatever the step does.
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface FakeStep {
  status?: number
  headers?: Record<string, string>
  body?: string | object
  delayMs?: number
  reset?: boolean
  hang?: boolean
  until?: Promise<unknown>
}

export interface RecordedRequest {
  method: string
  /** Path and query, e.g. `/v1/track`. */
  url: string
  headers: IncomingHttpHeaders
  rawBody: string
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: unknown
  /** Date.now() when the body had been read. */
  receivedAt: number
}

export class FakeSegment {
  readonly requests: RecordedRequest[] = []
  /** Picks the answer to a request from its content; see the top of this file. */
  decide: ((request: RecordedRequest) => FakeStep | undefined) | undefined
  /** The step played when the script is empty (an outage: `{ status: 503 }`), or a function of the request choosing it; undefined: 200. */
  fallback: FakeStep | ((request: RecordedRequest) => FakeStep) | undefined
  #script: FakeStep[] = []
  #server: Server | undefined
  #url: string | undefined
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #waiters: Array<{ count: number, resolve: () => void }> = []

  /** The base URL, e.g. `http://127.0.0.1:41234`; only after start(). */
  get url (): string {
    if (this.#url === undefined) throw new Error('FakeSegment is not started')
    return this.#url
  }

  /** Listens on 127.0.0.1 on a free port; resolves to the base URL. */
  async start (): Promise<string> {
    const server = createServer((request, response) => {
      const chunks: Buffer[] = []
      request.on('data', (chunk: Buffer) => chunks.push(chunk))
      request.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString('utf8')
        let body: unknown
        try { body = JSON.parse(rawBody) } catch { body = undefined }
        const recorded = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, rawBody, body, receivedAt: Date.now() }
        this.requests.push(recorded)
        this.#notify()
        const fallback = typeof this.fallback === 'function' ? this.fallback(recorded) : this.fallback
        this.#play(this.decide?.(recorded) ?? this.#script.shift() ?? fallback ?? {}, request.socket, response)
      })
    })
    // Keep-alive sockets must not outlive close().
    server.keepAliveTimeout = 1000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => resolve())
    })
    this.#server = server
    this.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    return this.#url
  }

  /** Queues answers for the next requests, in order. */
  respondWith (steps: FakeStep[]): void {
    this.#script.push(...steps)
  }

  /** Forgets recorded requests and queued steps. */
  reset (): void {
    this.requests.length = 0
    this.#script = []
  }

  /** Resolves once at least `count` requests have been recorded. */
  async waitForRequests (count: number): Promise<void> {
    if (this.requests.length >= count) return
    await new Promise<void>((resolve) => this.#waiters.push({ count, resolve }))
  }

  /** Stops listening and destroys every socket, hanging ones included. */
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

  #play (step: FakeStep, socket: Socket, response: ServerResponse): void {
    if (step.until !== undefined) {
      const { until: _until, ...rest } = step
      step.until.then(() => { if (this.#server !== undefined) this.#play(rest, socket, response) }, () => {})
      return
    }
    if (step.delayMs !== undefined && step.delayMs > 0) {
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        this.#play({ ...step, delayMs: 0 }, socket, response)
      }, step.delayMs)
      this.#timers.add(timer)
      return
    }
    if (step.hang === true) return
    if (step.reset === true) {
      socket.resetAndDestroy()
      return
    }
    const status = step.status ?? 200
    const body = step.body ?? (status >= 200 && status < 300 ? { success: true } : '')
    const text = typeof body === 'string' ? body : JSON.stringify(body)
    const headers: Record<string, string> = {
      'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
      ...step.headers
    }
    response.writeHead(status, headers)
    response.end(text)
  }

  #notify (): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const waiter = this.#waiters[i]!
      if (this.requests.length >= waiter.count) {
        this.#waiters.splice(i, 1)
        waiter.resolve()
      }
    }
  }
}

/** A started FakeSegment. */
export async function startFakeSegment (): Promise<FakeSegment> {
  const fake = new FakeSegment()
  await fake.start()
  return fake
}
