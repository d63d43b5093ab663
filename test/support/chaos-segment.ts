// A misbehaving fake Segment for fault-injection under concurrency. Unlike test/fake-segment.ts,
// which answers from a FIFO script, each request here draws its fault from a seeded PRNG, so a
// run is reproducible in its mix (not its interleaving) from the seed alone.
//
//   const chaos = await startChaosSegment({ seed: 42, attemptTimeoutMs: 300 })
//   chaos.url            // base URL for SEGMENT_API_URL
//   chaos.received       // every messageId received in a fully read body (batch items too)
//   chaos.faults         // how many requests got each fault
//   await chaos.openSockets()
//   await chaos.close()
//
// Every request body is read to its end and its messageIds recorded before the fault is played,
// so "the fake received that event" holds whatever the answer was.
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export type Fault =
  | 'ok' // 200 at once
  | 'ok-slow' // 200 after a delay well under the attempt timeout
  | 'reset' // TCP RST, no answer
  | 'destroy' // plain close (FIN), no answer
  | 'slow-headers' // headers only after the attempt timeout has passed
  | 'slow-body' // 200 headers at once, then the body dribbled out past the attempt timeout
  | 'slow-body-ok' // 200 headers at once, body dribbled out but finished within the timeout
  | '500' | '502' | '503'
  | '503-slow-body' // a 503 whose error body dribbles out past the attempt timeout
  | '429-0' | '429-1' // Retry-After in seconds
  | '429-date' // Retry-After as an HTTP-date 0.5–1.5 s ahead (its resolution is a second)
  | '302' // a redirect, which must not be followed
  | 'hang' // read the request, never answer

/** Relative weights; the default mix is roughly half success, half trouble. */
export const defaultWeights: Record<Fault, number> = {
  ok: 40,
  'ok-slow': 6,
  reset: 5,
  destroy: 3,
  'slow-headers': 4,
  'slow-body': 3,
  'slow-body-ok': 3,
  500: 4,
  502: 4,
  503: 4,
  '503-slow-body': 2,
  '429-0': 4,
  '429-1': 3,
  '429-date': 3,
  302: 3,
  hang: 3
}

/** mulberry32: a small, fast, seedable PRNG in [0, 1). */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface ChaosOptions {
  seed: number
  /** The app's SEGMENT_ATTEMPT_TIMEOUT_MS; slow faults are timed around it. */
  attemptTimeoutMs: number
  weights?: Partial<Record<Fault, number>>
}

export class ChaosSegment {
  /** messageId → how many times a body carrying it was fully received. */
  readonly received = new Map<string, number>()
  readonly faults = new Map<Fault, number>()
  requests = 0
  /** Requests received and not yet answered whose connection is still open. */
  readonly #unanswered = new Set<ServerResponse>()
  readonly #random: () => number
  readonly #table: Array<[Fault, number]>
  readonly #total: number
  readonly #attemptTimeoutMs: number
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #server: Server
  #url: string | undefined

  constructor (options: ChaosOptions) {
    this.#random = prng(options.seed)
    this.#attemptTimeoutMs = options.attemptTimeoutMs
    const weights = { ...defaultWeights, ...options.weights }
    this.#table = (Object.entries(weights) as Array<[Fault, number]>).filter(([, w]) => w > 0)
    this.#total = this.#table.reduce((sum, [, w]) => sum + w, 0)
    this.#server = createServer((request, response) => {
      const chunks: Buffer[] = []
      request.on('data', (chunk: Buffer) => chunks.push(chunk))
      request.on('end', () => {
        this.requests++
        this.#unanswered.add(response)
        response.once('close', () => this.#unanswered.delete(response))
        this.#record(Buffer.concat(chunks).toString('utf8'))
        const fault = this.#draw()
        this.faults.set(fault, (this.faults.get(fault) ?? 0) + 1)
        this.#play(fault, request.socket, response)
      })
    })
    // Idle keep-alive sockets close soon, so socket counts settle quickly after a run.
    this.#server.keepAliveTimeout = 500
  }

  get url (): string {
    if (this.#url === undefined) throw new Error('ChaosSegment is not started')
    return this.#url
  }

  async start (): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(0, '127.0.0.1', () => resolve())
    })
    this.#url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this.#url
  }

  /** Sockets the server holds open right now. */
  async openSockets (): Promise<number> {
    return await new Promise((resolve, reject) => {
      this.#server.getConnections((error, count) => { if (error !== null) reject(error); else resolve(count) })
    })
  }

  /** Requests received whose answer is not finished and whose connection is still open. */
  get unanswered (): number {
    return this.#unanswered.size
  }

  /** Timers of delayed answers still pending. */
  get pendingTimers (): number {
    return this.#timers.size
  }

  async close (): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    if (!this.#server.listening) return
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeAllConnections()
    await closed
  }

  #draw (): Fault {
    let pick = this.#random() * this.#total
    for (const [fault, weight] of this.#table) {
      pick -= weight
      if (pick < 0) return fault
    }
    return this.#table[this.#table.length - 1]![0]
  }

  #record (raw: string): void {
    let body: unknown
    try { body = JSON.parse(raw) } catch { return }
    const items = Array.isArray((body as { batch?: unknown }).batch) ? (body as { batch: unknown[] }).batch : [body]
    for (const item of items) {
      const id = (item as { messageId?: unknown } | null)?.messageId
      if (typeof id === 'string') this.received.set(id, (this.received.get(id) ?? 0) + 1)
    }
  }

  #later (ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      fn()
    }, ms)
    this.#timers.add(timer)
  }

  #play (fault: Fault, socket: Socket, response: ServerResponse): void {
    const timeout = this.#attemptTimeoutMs
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      if (response.destroyed || socket.destroyed) return
      response.writeHead(status, { 'content-type': 'application/json', ...headers })
      response.end(JSON.stringify(body))
    }
    const dribble = (status: number, pieces: number, gapMs: number) => {
      if (socket.destroyed) return
      response.writeHead(status, { 'content-type': 'application/json' })
      response.flushHeaders()
      const text = JSON.stringify(status === 200 ? { success: true } : { error: 'slow trouble'.padEnd(40, '.') })
      const size = Math.ceil(text.length / pieces)
      let at = 0
      const next = () => {
        if (response.destroyed || socket.destroyed) return
        const piece = text.slice(at, at + size)
        at += size
        if (at >= text.length) response.end(piece)
        else {
          response.write(piece)
          this.#later(gapMs, next)
        }
      }
      next()
    }
    switch (fault) {
      case 'ok': return json(200, { success: true })
      case 'ok-slow': return this.#later(Math.floor(timeout * 0.3), () => json(200, { success: true }))
      case 'reset': socket.resetAndDestroy(); return
      case 'destroy': socket.destroy(); return
      case 'slow-headers': return this.#later(Math.floor(timeout * 1.5), () => json(200, { success: true }))
      // Each gap is under the timeout (so undici's own bodyTimeout never fires), the sum is over it.
      case 'slow-body': return dribble(200, 6, Math.floor(timeout * 0.4))
      case 'slow-body-ok': return dribble(200, 3, Math.floor(timeout * 0.1))
      case '500': return json(500, { error: 'internal' })
      case '502': return json(502, { error: 'bad gateway' })
      case '503': return json(503, { error: 'unavailable' })
      case '503-slow-body': return dribble(503, 6, Math.floor(timeout * 0.4))
      case '429-0': return json(429, { error: 'slow down' }, { 'retry-after': '0' })
      case '429-1': return json(429, { error: 'slow down' }, { 'retry-after': '1' })
      case '429-date': return json(429, { error: 'slow down' }, { 'retry-after': new Date(Date.now() + 1500).toUTCString() })
      case '302': return json(302, { moved: true }, { location: 'http://127.0.0.1:9/elsewhere' })
      case 'hang': // read the request, never answer: the client's abort frees the socket
    }
  }
}

export async function startChaosSegment (options: ChaosOptions): Promise<ChaosSegment> {
  const chaos = new ChaosSegment(options)
  await chaos.start()
  return chaos
}
