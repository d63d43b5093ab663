// Memory over time: a fixed number of track-events against one service process, with heap and
// RSS read after a forced GC before, during (while autocannon's keep-alive sockets are open) and
// after the run.
import type { Request } from 'autocannon'
import type { MemoryReport } from './child.js'
import { load, type LoadResult } from './load.js'
import type { Running } from './processes.js'

export interface MemorySample extends MemoryReport {
  /** Seconds since the measured run started. */
  at: number
}

export interface MemoryResult {
  requests: number
  warmup: number
  start: MemorySample
  during: MemorySample[]
  end: MemorySample
  /** (end heap - start heap) / start heap, both after GC. */
  heapGrowth: number
  /** Largest heap after GC seen during the run, relative to the start. */
  peakHeapGrowth: number
  load: LoadResult
}

export async function memoryOverTime (service: Running, requests: Request[], options: { connections: number, amount: number, warmup: number, sampleEverySeconds: number }): Promise<MemoryResult> {
  await load({ url: service.url, requests, connections: options.connections, amount: options.warmup })
  const started = performance.now()
  const sample = async (): Promise<MemorySample> => ({ ...await service.memory(true), at: (performance.now() - started) / 1000 })
  const start = await sample()
  const during: MemorySample[] = []
  let sampling = Promise.resolve()
  const timer = setInterval(() => { sampling = sampling.then(async () => { during.push(await sample()) }) }, options.sampleEverySeconds * 1000)
  const result = await load({ url: service.url, requests, connections: options.connections, amount: options.amount })
  clearInterval(timer)
  await sampling
  const end = await sample()
  const peak = Math.max(start.heapUsed, ...during.map((s) => s.heapUsed))
  return {
    requests: options.amount,
    warmup: options.warmup,
    start,
    during,
    end,
    heapGrowth: (end.heapUsed - start.heapUsed) / start.heapUsed,
    peakHeapGrowth: (peak - start.heapUsed) / start.heapUsed,
    load: result
  }
}
