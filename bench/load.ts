// Drives one target with autocannon. Latencies are collected from autocannon's per-response event
// (sub-millisecond, from hrtime) because its own histogram rounds to whole milliseconds, which is
// too coarse on loopback.
import autocannon, { type Request } from 'autocannon'
import { percentile } from './stats.js'

export interface LoadOptions {
  url: string
  requests: Request[]
  connections: number
  /** Seconds; ignored when `amount` is set. */
  duration?: number
  /** Total requests to send instead of a duration. */
  amount?: number
  /** Requests per second from all connections together (open-loop offered load); unlimited by default. */
  overallRate?: number
}

export interface LoadResult {
  requests: number
  /** 2xx answers per second. */
  rps: number
  p50: number
  p99: number
  non2xx: number
  /** Answers by status code, 2xx included. */
  statuses: Record<string, number>
  errors: number
  seconds: number
}

export async function load (options: LoadOptions): Promise<LoadResult> {
  let latencies = new Float64Array(1 << 16)
  let count = 0
  let non2xx = 0
  const statuses: Record<string, number> = {}
  const started = performance.now()
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    pipelining: 1,
    timeout: 30,
    requests: options.requests,
    ...(options.amount === undefined ? { duration: options.duration ?? 10 } : { amount: options.amount }),
    ...(options.overallRate === undefined ? {} : { overallRate: options.overallRate })
  })
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    statuses[statusCode] = (statuses[statusCode] ?? 0) + 1
    if (statusCode < 200 || statusCode >= 300) {
      non2xx++
      return
    }
    if (count === latencies.length) {
      const grown = new Float64Array(latencies.length * 2)
      grown.set(latencies)
      latencies = grown
    }
    latencies[count++] = responseTime
  })
  const result = await instance
  const seconds = (performance.now() - started) / 1000
  const sorted = latencies.subarray(0, count).sort()
  return {
    requests: count,
    rps: count / seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    non2xx,
    statuses,
    errors: result.errors + result.timeouts,
    seconds
  }
}
