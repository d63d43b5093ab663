// A Segment-like upstream: every answer after 30 ms, and at most 1,000 requests a second per Write
// Key (fixed one-second windows): past it, 429 with `Retry-After: 1`, as Segment's edge answers.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface SegmentLikeOptions {
  latencyMs: number
  /** Requests per Write Key per second before 429s. */
  limit: number
}

export interface SegmentLikeStats {
  requests: number
  accepted: number
  rateLimited: number
  /** Events in accepted requests (batch items counted one by one). */
  events: number
  /** Most requests any Write Key made in one window. */
  peakPerSecond: number
}

export interface SegmentLike {
  url: string
  stats: () => SegmentLikeStats
  close: () => Promise<void>
}

const ok = Buffer.from('{"success":true}')
const limited = Buffer.from('{"success":false,"message":"rate limited"}')

export async function startSegmentLike (options: SegmentLikeOptions): Promise<SegmentLike> {
  const stats: SegmentLikeStats = { requests: 0, accepted: 0, rateLimited: 0, events: 0, peakPerSecond: 0 }
  const windows = new Map<string, { second: number, count: number }>()
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      stats.requests++
      const key = request.headers.authorization ?? ''
      const second = Math.floor(Date.now() / 1000)
      let window = windows.get(key)
      if (window === undefined || window.second !== second) {
        window = { second, count: 0 }
        windows.set(key, window)
      }
      window.count++
      stats.peakPerSecond = Math.max(stats.peakPerSecond, window.count)
      const allowed = window.count <= options.limit
      // Counting batch items costs the fake a parse; only accepted bodies are counted.
      if (allowed) {
        const body = Buffer.concat(chunks).toString('utf8')
        stats.events += request.url === '/v1/batch' ? (JSON.parse(body) as { batch: unknown[] }).batch.length : 1
      }
      setTimeout(() => {
        if (allowed) {
          stats.accepted++
          response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(ok.length) })
          response.end(ok)
        } else {
          stats.rateLimited++
          response.writeHead(429, { 'content-type': 'application/json', 'content-length': String(limited.length), 'retry-after': '1' })
          response.end(limited)
        }
      }, options.latencyMs)
    })
  })
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 125_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats: () => ({ ...stats }),
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await closed
    }
  }
}
