// One process under test, started by run.ts over IPC: `node --expose-gc dist/bench/child.js ROLE`.
// ROLE is `fake` (the fast fake Segment), `service` (buildApp from the environment, as `serve`
// would, plus a workspace and a connection) or `baseline`. Every role answers the same messages,
// so the service and the baseline are started, measured and stopped the same way.
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { GCProfiler, getHeapStatistics } from 'node:v8'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { productionLogStream } from '../src/server.js'
import { buildBaseline } from './baseline.js'
import { startFastFake } from './fake-segment-fast.js'
import { startSegmentLike } from './segment-like.js'
import { BENCH_WRITE_KEY } from './scenarios.js'

export interface Ready {
  type: 'ready'
  url: string
  token: string
  connectionId: string
}

export interface MemoryReport {
  type: 'memory'
  rss: number
  heapUsed: number
  heapTotal: number
  /** Peak resident set size of the process so far (getrusage ru_maxrss, i.e. VmHWM). */
  peakRss: number
  /** CPU time (user + system, all threads) since the process started, in microseconds. */
  cpuMicros: number
  /** Bytes allocated on the JS heap since the process started (see allocatedBytes). */
  allocatedBytes: number
}

export interface Done {
  type: 'done'
}

/** What an upstream stand-in counted so far (requests, 429s, …). */
export interface StatsReport {
  type: 'stats'
  stats: Record<string, number>
}

export type ParentMessage =
  | { type: 'memory', gc: boolean }
  | { type: 'profile-start' }
  | { type: 'profile-stop', file: string }
  | { type: 'stats' }
  | { type: 'close' }

const send = (message: Ready | MemoryReport | Done | StatsReport): void => { process.send?.(message) }

interface Started {
  ready: Ready
  close: () => Promise<void>
  stats?: () => Record<string, number>
}

async function startService (): Promise<Started> {
  // Logged exactly as `serve` logs.
  const app: FastifyInstance = await buildApp(loadConfig(process.env), { logStream: productionLogStream() })
  const adminToken = process.env.ADMIN_TOKEN ?? ''
  const workspace = await app.inject({
    method: 'POST', url: '/v1/admin/workspaces', headers: { authorization: `Bearer ${adminToken}` }, payload: { name: 'Bench' }
  })
  if (workspace.statusCode !== 201) throw new Error(`workspace create failed: ${workspace.statusCode} ${workspace.body}`)
  const { token } = workspace.json<{ token: string }>()
  const connection = await app.inject({
    method: 'POST', url: '/v1/connections', headers: { authorization: `Bearer ${token}` }, payload: { name: 'Bench', writeKey: BENCH_WRITE_KEY }
  })
  if (connection.statusCode !== 201) throw new Error(`connection create failed: ${connection.statusCode} ${connection.body}`)
  const { id } = connection.json<{ id: string }>()
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { ready: { type: 'ready', url, token, connectionId: id }, close: async () => { await app.close() } }
}

async function startBaseline (): Promise<Started> {
  const app = buildBaseline({ upstream: process.env.SEGMENT_API_URL ?? '', writeKey: BENCH_WRITE_KEY })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { ready: { type: 'ready', url, token: 'unused', connectionId: 'con_baseline' }, close: async () => { await app.close() } }
}

async function startFake (): Promise<Started> {
  const fake = await startFastFake()
  return { ready: { type: 'ready', url: fake.url, token: '', connectionId: '' }, close: fake.close, stats: () => ({ requests: fake.requests() }) }
}

async function startSegmentLikeFake (): Promise<Started> {
  const fake = await startSegmentLike({ latencyMs: Number(process.env.SEGMENT_LIKE_LATENCY_MS ?? 30), limit: Number(process.env.SEGMENT_LIKE_LIMIT ?? 1000) })
  return { ready: { type: 'ready', url: fake.url, token: '', connectionId: '' }, close: fake.close, stats: () => ({ ...fake.stats() }) }
}

// Bytes allocated on the JS heap: what every collection freed (GCProfiler reports each one's heap
// before and after) plus what is in use now over what was in use at start. Unlike CPU time, this
// hardly moves with what else the machine runs. The profiler is restarted at each reading.
let freedByGc = 0
let gcProfiler = new GCProfiler()
gcProfiler.start()
const usedAtStart = getHeapStatistics().used_heap_size
function allocatedBytes (): number {
  for (const gc of gcProfiler.stop().statistics) {
    freedByGc += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize
  }
  gcProfiler = new GCProfiler()
  gcProfiler.start()
  return freedByGc + getHeapStatistics().used_heap_size - usedAtStart
}

function memory (gc: boolean): MemoryReport {
  if (gc) {
    // Twice: the first pass can leave objects that only become unreachable after finalisers run.
    globalThis.gc?.()
    globalThis.gc?.()
  }
  const { rss, heapUsed, heapTotal } = process.memoryUsage()
  const usage = process.resourceUsage()
  return { type: 'memory', rss, heapUsed, heapTotal, peakRss: usage.maxRSS * 1024, cpuMicros: usage.userCPUTime + usage.systemCPUTime, allocatedBytes: allocatedBytes() }
}

// A CPU profile of a window chosen by the harness (after warm-up), unlike --cpu-prof, which would
// also record start-up: module loading and schema compilation.
let session: Session | undefined
async function profile (message: ParentMessage): Promise<void> {
  if (message.type === 'profile-start') {
    session = new Session()
    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.start')
  } else if (message.type === 'profile-stop' && session !== undefined) {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(message.file, JSON.stringify(profile))
    session.disconnect()
    session = undefined
  }
}

const role = process.argv[2]
const starters = { service: startService, baseline: startBaseline, fake: startFake, 'segment-like': startSegmentLikeFake }
const start = starters[role as keyof typeof starters]
if (start === undefined) throw new Error(`unknown role ${String(role)}; expected service, baseline or fake`)

const { ready, close, stats } = await start()
process.on('message', (message: ParentMessage) => {
  if (message.type === 'memory') send(memory(message.gc))
  else if (message.type === 'stats') send({ type: 'stats', stats: stats?.() ?? {} })
  else if (message.type === 'close') {
    close().then(() => process.exit(0), (error: unknown) => { console.error(error); process.exit(1) })
  } else {
    profile(message).then(() => send({ type: 'done' }), (error: unknown) => { console.error(error); process.exit(1) })
  }
})
// The harness died: do not linger.
process.on('disconnect', () => process.exit(0))
send(ready)
