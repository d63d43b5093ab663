// `npm run bench`: the service against a bare Fastify + undici passthrough (bench/baseline.ts),
// both forwarding to the same fast fake Segment on loopback, each in its own process, alternated
// over several rounds; then the batch build against JSON's floor, memory over 200,000 requests, and
// a CPU profile of the track-event scenario. Prints a table; writes bench/results/*.json.
//
// Knobs (environment): BENCH_DURATION (s, 6), BENCH_WARMUP (s, 2), BENCH_ROUNDS (3),
// BENCH_CONNECTIONS (16), BENCH_SCENARIOS (comma-separated names, all), BENCH_MEMORY_REQUESTS
// (200000; 0 skips), BENCH_FLOOR_ITERATIONS (300; 0 skips), BENCH_PROFILE (1; 0 skips),
// PG_URL (a PostgreSQL server for the track-postgres scenario; skipped when unset),
// BENCH_VARIANTS (label=git-ref[@scenario+scenario],…: other builds of the service measured beside
// it in the same rounds, in the scenarios named, else those of BENCH_VARIANT_SCENARIOS,
// track-event-32 by default),
// BENCH_SEGMENT_LIKE (1; 0 skips the Segment-like upstream), BENCH_SEGMENT_LIKE_SECONDS (20),
// BENCH_SEGMENT_LIKE_RATE (4000), BENCH_SEGMENT_LIKE_CONNECTIONS (400).
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { batchFloor, type BatchFloorResult } from './batch-floor.js'
import { load, type LoadResult } from './load.js'
import { memoryOverTime, type MemoryResult } from './memory.js'
import { start, type Running } from './processes.js'
import { formatRows, summariseProfile, type ProfileSummary } from './profile-summary.js'
import { scenarios, type Scenario } from './scenarios.js'
import { median, mib } from './stats.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const resultsDir = join(root, 'bench', 'results')
const childScript = join(root, 'dist', 'bench', 'child.js')

const number = (name: string, fallback: number): number => {
  const value = process.env[name]
  if (value === undefined || value === '') return fallback
  const parsed = Number(value)
  if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`${name} must be a non-negative number (got "${value}")`)
  return parsed
}

const settings = {
  duration: number('BENCH_DURATION', 6),
  warmup: number('BENCH_WARMUP', 2),
  rounds: Math.max(1, number('BENCH_ROUNDS', 3)),
  connections: Math.max(1, number('BENCH_CONNECTIONS', 16)),
  memoryRequests: number('BENCH_MEMORY_REQUESTS', 200_000),
  floorIterations: number('BENCH_FLOOR_ITERATIONS', 300),
  profile: number('BENCH_PROFILE', 1) !== 0,
  only: (process.env.BENCH_SCENARIOS ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''),
  variants: (process.env.BENCH_VARIANTS ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '').map((entry) => {
    const [label, target] = entry.split('=')
    const [ref, only] = (target ?? '').split('@')
    if (label === undefined || ref === undefined || label === '' || ref === '') throw new Error(`BENCH_VARIANTS: "${entry}" is not label=git-ref[@scenario+scenario]`)
    return { label, ref, scenarios: only === undefined ? undefined : only.split('+') }
  }),
  variantScenarios: (process.env.BENCH_VARIANT_SCENARIOS ?? 'track-event-32').split(',').map((s) => s.trim()).filter((s) => s !== ''),
  segmentLike: number('BENCH_SEGMENT_LIKE', 1) !== 0,
  segmentLikeSeconds: number('BENCH_SEGMENT_LIKE_SECONDS', 20),
  segmentLikeRate: number('BENCH_SEGMENT_LIKE_RATE', 4000),
  segmentLikeConnections: number('BENCH_SEGMENT_LIKE_CONNECTIONS', 400)
}
const pgUrl = process.env.PG_URL ?? ''

const log = (line: string): void => { process.stderr.write(line + '\n') }

// --- build: the service and the baseline run compiled by the same tsc, from dist/ ----------------
log('compiling src/ and bench/ into dist/ …')
const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'bench', 'tsconfig.json')], { stdio: 'inherit' })
if (tsc.status !== 0) throw new Error('tsc failed')

mkdirSync(resultsDir, { recursive: true })
const dataDir = mkdtempSync(join(tmpdir(), 'segment-forwarder-bench-'))
const cleanups: Array<() => Promise<void>> = [async () => rmSync(dataDir, { recursive: true, force: true })]

// Other builds of the service (another commit), compiled the same way from `git archive`.
const variantScripts = new Map<string, string>()
for (const { label, ref } of settings.variants) {
  const dir = join(dataDir, `variant-${label}`)
  mkdirSync(dir)
  execFileSync('sh', ['-c', 'git -C "$ROOT" archive "$REF" | tar -x -C "$DIR"'], { env: { ...process.env, ROOT: root, REF: ref, DIR: dir }, stdio: 'inherit' })
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  log(`compiling variant ${label} (${ref}) …`)
  const built = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'bench', 'tsconfig.json')], { stdio: 'inherit' })
  if (built.status !== 0) throw new Error(`tsc failed for variant ${label}`)
  variantScripts.set(label, join(dir, 'dist', 'bench', 'child.js'))
}
const cleanup = async (): Promise<void> => { for (const fn of cleanups.splice(0).reverse()) await fn().catch((error: unknown) => log(String(error))) }
process.once('SIGINT', () => { cleanup().finally(() => process.exit(130)) })
// A failure anywhere (top-level await included) still drops the database and the temp folder.
process.once('uncaughtException', (error) => {
  console.error(error)
  cleanup().finally(() => process.exit(1))
})

const fake = await start({ script: childScript, role: 'fake', env: {} })
cleanups.push(fake.close)
log(`fake Segment at ${fake.url}`)

// --- PostgreSQL: a fresh database for this run, dropped at the end ---------------------------------
let postgresUrl: string | undefined
const wanted = (s: Scenario): boolean => settings.only.length === 0 || settings.only.includes(s.name)
if (pgUrl !== '' && scenarios.some((s) => s.postgres === true && wanted(s))) {
  const database = `segment_forwarder_bench_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: pgUrl })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${database}`)
  await admin.end()
  const url = new URL(pgUrl)
  url.pathname = `/${database}`
  postgresUrl = url.toString()
  cleanups.push(async () => {
    const client = new pg.Client({ connectionString: pgUrl })
    await client.connect()
    await client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    await client.end()
  })
  log(`PostgreSQL database ${database}`)
}
const pgKeys = `bench:${randomBytes(32).toString('base64')}`

let starts = 0
async function startTarget (role: 'service' | 'baseline', scenario: Scenario | undefined, execArgv: string[] = [], options: { upstream?: string, script?: string } = {}): Promise<Running> {
  const env: Record<string, string> = { NODE_ENV: 'production', SEGMENT_API_URL: options.upstream ?? fake.url }
  if (role === 'service') {
    Object.assign(env, {
      LOG_LEVEL: 'info',
      ADMIN_TOKEN: randomBytes(16).toString('hex'),
      // A limiter, once added, must not throttle the benchmark.
      RATE_LIMIT_MAX: '100000000',
      // Shedding is off: a request answered 503 is not a request forwarded. (The machine is shared;
      // a startup pause of over a second made the first admin call shed.)
      PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
      DATABASE_URL: scenario?.postgres === true ? postgresUrl! : `sqlite:${join(dataDir, String(starts++), 'segment-forwarder.db')}`,
      ...(scenario?.postgres === true ? { ENCRYPTION_KEYS: pgKeys } : {}),
      ...scenario?.serviceEnv
    })
  }
  // The service logs as in production (one JSON line per request) to /dev/null.
  return await start({ script: options.script ?? childScript, role, env, execArgv })
}

// --- scenarios: service and baseline alternate, the order flipping each round --------------------
interface Measurement extends LoadResult {
  peakRss: number
  /** CPU time of the process under test per 2xx answer, in microseconds. */
  cpuPerRequest: number
  /** JS heap bytes allocated by the process under test per 2xx answer. */
  allocatedPerRequest: number
  /** Requests the fake Segment received per 2xx answer (events per answer for track-event). */
  upstreamPerRequest: number
}
interface Round {
  service: Measurement
  baseline: Measurement
  /** Other builds of the service (BENCH_VARIANTS), by label. */
  variants: Record<string, Measurement>
}
interface ScenarioRun {
  scenario: string
  description: string
  rounds: Round[]
}

async function measure (role: 'service' | 'baseline', scenario: Scenario, script?: string): Promise<Measurement> {
  const target = await startTarget(role, scenario, [], script === undefined ? {} : { script })
  const connections = scenario.connections ?? settings.connections
  try {
    const requests = scenario.requests(target)
    if (settings.warmup > 0) await load({ url: target.url, requests, connections, duration: settings.warmup })
    const before = await target.memory(false)
    const upstreamBefore = (await fake.stats()).requests ?? 0
    const result = await load({ url: target.url, requests, connections, duration: settings.duration })
    const upstreamAfter = (await fake.stats()).requests ?? 0
    const after = await target.memory(false)
    return {
      ...result,
      peakRss: after.peakRss,
      cpuPerRequest: (after.cpuMicros - before.cpuMicros) / result.requests,
      allocatedPerRequest: (after.allocatedBytes - before.allocatedBytes) / result.requests,
      upstreamPerRequest: (upstreamAfter - upstreamBefore) / result.requests
    }
  } finally {
    await target.close()
  }
}

const selected = scenarios.filter((s) => wanted(s) && (s.postgres !== true || postgresUrl !== undefined))
for (const s of scenarios) {
  if (wanted(s) && s.postgres === true && postgresUrl === undefined) log(`skipping ${s.name}: PG_URL is not set`)
}
const runs: ScenarioRun[] = selected.map((s) => ({ scenario: s.name, description: s.description, rounds: [] }))
const startedAt = new Date()
const loadBefore = loadavg()

for (let round = 0; round < settings.rounds; round++) {
  for (const [index, scenario] of selected.entries()) {
    const labels = settings.variants.filter((v) => (v.scenarios ?? settings.variantScenarios).includes(scenario.name)).map((v) => v.label)
    const forward = ['service', 'baseline', ...labels]
    const order = round % 2 === 0 ? forward : [...forward].reverse()
    const measured: Record<string, Measurement> = {}
    for (const who of order) {
      measured[who] = who === 'service' || who === 'baseline' ? await measure(who, scenario) : await measure('service', scenario, variantScripts.get(who))
    }
    const service = measured.service!
    const baseline = measured.baseline!
    runs[index]!.rounds.push({ service, baseline, variants: Object.fromEntries(labels.map((label) => [label, measured[label]!])) })
    for (const label of labels) {
      const v = measured[label]!
      log(`  variant ${label}: ${v.rps.toFixed(0)} rps p99 ${v.p99.toFixed(2)} ms, ${v.cpuPerRequest.toFixed(0)} µs CPU/req (service ${service.cpuPerRequest.toFixed(0)})`)
    }
    log(`round ${round + 1}/${settings.rounds} ${scenario.name}: service ${service.rps.toFixed(0)} rps p99 ${service.p99.toFixed(2)} ms ${service.upstreamPerRequest.toFixed(3)} upstream/req, ` +
      `baseline ${baseline.rps.toFixed(0)} rps p99 ${baseline.p99.toFixed(2)} ms` +
      (service.non2xx + service.errors + baseline.non2xx + baseline.errors > 0
        ? ` (non-2xx/errors: service ${service.non2xx}/${service.errors}, baseline ${baseline.non2xx}/${baseline.errors})`
        : ''))
  }
}

// --- a Segment-like upstream: 30 ms, 1,000 requests/s per Write Key, offered a fixed rate -----------
interface SegmentLikeRun {
  role: 'service' | 'baseline'
  load: LoadResult
  upstream: Record<string, number>
}
const segmentLikeRuns: SegmentLikeRun[] = []
const track32 = scenarios.find((s) => s.name === 'track-event-32')!
if (settings.segmentLike) {
  for (const role of ['service', 'baseline'] as const) {
    log(`Segment-like upstream: ${role}, ${settings.segmentLikeRate} track-events/s for ${settings.segmentLikeSeconds} s …`)
    const upstream = await start({ script: childScript, role: 'segment-like', env: {} })
    const target = await startTarget(role, track32, [], { upstream: upstream.url })
    try {
      const requests = track32.requests(target)
      const result = await load({ url: target.url, requests, connections: settings.segmentLikeConnections, duration: settings.segmentLikeSeconds, overallRate: settings.segmentLikeRate })
      segmentLikeRuns.push({ role, load: result, upstream: await upstream.stats() })
      log(`  ${role}: ${JSON.stringify(result.statuses)}, ${result.errors} errors; upstream ${JSON.stringify(await upstream.stats())}`)
    } finally {
      await target.close()
      await upstream.close()
    }
  }
}

// --- memory over time ----------------------------------------------------------------------------
let memory: MemoryResult | undefined
// Coalescing on, 32 connections: the lanes and their waiting calls are part of what is measured.
const track = track32
if (settings.memoryRequests > 0) {
  log(`memory: ${settings.memoryRequests.toLocaleString('en')} track-events …`)
  const service = await startTarget('service', track)
  try {
    memory = await memoryOverTime(service, track.requests(service), {
      connections: track.connections ?? settings.connections, amount: settings.memoryRequests, warmup: 10_000, sampleEverySeconds: 10
    })
  } finally {
    await service.close()
  }
}

// --- batch build against JSON's floor (in this process, now otherwise idle) ----------------------
let floor: BatchFloorResult | undefined
if (settings.floorIterations > 0) {
  log('batch floor …')
  floor = await batchFloor(settings.floorIterations)
}

// --- CPU profiles of the service and the baseline under the track-event scenario -----------------
type Profiled = ProfileSummary & { file: string, requests: number }
const profiles: Partial<Record<'service' | 'baseline', Profiled>> = {}
if (settings.profile) {
  for (const role of ['service', 'baseline'] as const) {
    log(`profiling the ${role} under track-event …`)
    const file = join(resultsDir, `track-event-${role}.cpuprofile`)
    const target = await startTarget(role, track)
    let requests = 0
    try {
      const list = track.requests(target)
      const connections = track.connections ?? settings.connections
      await load({ url: target.url, requests: list, connections, duration: settings.warmup })
      const stop = await target.profile()
      requests = (await load({ url: target.url, requests: list, connections, duration: settings.duration })).requests
      await stop(file)
    } finally {
      await target.close()
    }
    profiles[role] = { file, requests, ...summariseProfile(file, role === 'service' ? 25 : 1000) }
  }
}
const profile = profiles.service

await cleanup()

// --- report --------------------------------------------------------------------------------------
const machine = {
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  loadBefore: loadBefore.map((l) => Number(l.toFixed(2))),
  loadAfter: loadavg().map((l) => Number(l.toFixed(2)))
}

const ratio = (run: ScenarioRun, pick: (m: Measurement) => number): number =>
  median(run.rounds.map((r) => pick(r.service) / pick(r.baseline)))
const med = (run: ScenarioRun, role: 'service' | 'baseline', pick: (m: Measurement) => number): number =>
  median(run.rounds.map((r) => pick(r[role])))

const summary = (run: ScenarioRun, role: 'service' | 'baseline') => ({
  rps: med(run, role, (m) => m.rps),
  p50: med(run, role, (m) => m.p50),
  p99: med(run, role, (m) => m.p99),
  peakRssMiB: mib(med(run, role, (m) => m.peakRss)),
  cpuPerRequest: med(run, role, (m) => m.cpuPerRequest),
  allocatedKiBPerRequest: med(run, role, (m) => m.allocatedPerRequest) / 1024,
  upstreamPerRequest: med(run, role, (m) => m.upstreamPerRequest)
})
// Each variant against the baseline and against the service of its own round.
const variantRows = runs.flatMap((run) => {
  const labels = Object.keys(run.rounds[0]?.variants ?? {})
  return labels.map((label) => {
    const pick = (round: Round): Measurement => round.variants[label]!
    return {
      scenario: run.scenario,
      label,
      ref: settings.variants.find((v) => v.label === label)?.ref ?? '',
      rps: median(run.rounds.map((r) => pick(r).rps)),
      p99: median(run.rounds.map((r) => pick(r).p99)),
      cpuPerRequest: median(run.rounds.map((r) => pick(r).cpuPerRequest)),
      upstreamPerRequest: median(run.rounds.map((r) => pick(r).upstreamPerRequest)),
      rpsVsBaseline: median(run.rounds.map((r) => pick(r).rps / r.baseline.rps)),
      p99VsBaseline: median(run.rounds.map((r) => pick(r).p99 / r.baseline.p99)),
      serviceRpsVsVariant: median(run.rounds.map((r) => r.service.rps / pick(r).rps)),
      serviceCpuVsVariant: median(run.rounds.map((r) => r.service.cpuPerRequest / pick(r).cpuPerRequest)),
      perRound: run.rounds.map((r) => ({ rps: pick(r).rps, cpu: pick(r).cpuPerRequest, serviceRps: r.service.rps, serviceCpu: r.service.cpuPerRequest, baselineRps: r.baseline.rps }))
    }
  })
})
const table = runs.map((run) => ({
  scenario: run.scenario,
  description: run.description,
  service: summary(run, 'service'),
  baseline: summary(run, 'baseline'),
  ratio: { rps: ratio(run, (m) => m.rps), p50: ratio(run, (m) => m.p50), p99: ratio(run, (m) => m.p99), peakRss: ratio(run, (m) => m.peakRss), cpuPerRequest: ratio(run, (m) => m.cpuPerRequest), allocatedPerRequest: ratio(run, (m) => m.allocatedPerRequest) },
  perRound: run.rounds.map((r) => ({ rps: r.service.rps / r.baseline.rps, p99: r.service.p99 / r.baseline.p99 })),
  failures: run.rounds.reduce((n, r) => n + r.service.non2xx + r.service.errors + r.baseline.non2xx + r.baseline.errors, 0)
}))

const row = (name: string): (typeof table)[number] | undefined => table.find((t) => t.scenario === name)
type Verdict = { target: string, value: number | undefined, limit: number, met: boolean | undefined }
const verdict = (target: string, value: number | undefined, limit: number, atLeast: boolean): Verdict =>
  ({ target, value, limit, met: value === undefined ? undefined : atLeast ? value >= limit : value <= limit })
const segmentLikeService = segmentLikeRuns.find((r) => r.role === 'service')
const targets: Verdict[] = [
  verdict('track-event, 32 connections, coalescing on: throughput ≥ 0.8 × passthrough', row('track-event-32')?.ratio.rps, 0.8, true),
  verdict('track-event, 32 connections, coalescing on: p99 ≤ 1.5 × passthrough', row('track-event-32')?.ratio.p99, 1.5, false),
  verdict('track-event, 32 connections, coalescing on: upstream requests per event ≤ 0.2', row('track-event-32')?.service.upstreamPerRequest, 0.2, false),
  verdict('batch-send, 700 nested events: throughput ≥ 0.85 × passthrough', row('batch-send-nested')?.ratio.rps, 0.85, true),
  verdict('Segment-like upstream: service callers answered other than 200 (none allowed)', segmentLikeService === undefined ? undefined : segmentLikeService.load.non2xx + segmentLikeService.load.errors, 0, false),
  verdict('Segment-like upstream: 429s the service drew (none allowed)', segmentLikeService?.upstream.rateLimited, 0, false),
  verdict('heap after GC grows < 10 % over the run', memory?.heapGrowth, 0.1, false)
]

const f = (n: number, digits = 0): string => Number.isFinite(n) ? n.toFixed(digits) : '–'
const lines: string[] = []
lines.push(`segment-forwarder bench — ${startedAt.toISOString()}`)
lines.push(`${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}; load average ${machine.loadBefore.join(' ')} → ${machine.loadAfter.join(' ')}`)
lines.push(`${settings.rounds} rounds × (${settings.warmup} s warm-up + ${settings.duration} s), ${settings.connections} connections, no pipelining; ratios are service / baseline, median over rounds`)
lines.push('')
lines.push('| scenario | req/s service | req/s baseline | ratio | p50 ms service / baseline | ratio | p99 ms service / baseline | ratio | peak RSS MiB service / baseline | ratio | CPU µs/req service / baseline | ratio | heap allocated KiB/req service / baseline | ratio | upstream requests per answer service / baseline |')
lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
for (const t of table) {
  lines.push(`| ${t.description}${t.failures > 0 ? ` (${t.failures} failed)` : ''} | ${f(t.service.rps)} | ${f(t.baseline.rps)} | **${f(t.ratio.rps, 2)}** | ` +
    `${f(t.service.p50, 2)} / ${f(t.baseline.p50, 2)} | ${f(t.ratio.p50, 2)} | ${f(t.service.p99, 2)} / ${f(t.baseline.p99, 2)} | **${f(t.ratio.p99, 2)}** | ` +
    `${f(t.service.peakRssMiB)} / ${f(t.baseline.peakRssMiB)} | ${f(t.ratio.peakRss, 2)} | ` +
    `${f(t.service.cpuPerRequest)} / ${f(t.baseline.cpuPerRequest)} | ${f(t.ratio.cpuPerRequest, 2)} | ` +
    `${f(t.service.allocatedKiBPerRequest, 1)} / ${f(t.baseline.allocatedKiBPerRequest, 1)} | ${f(t.ratio.allocatedPerRequest, 2)} | ` +
    `${f(t.service.upstreamPerRequest, 3)} / ${f(t.baseline.upstreamPerRequest, 3)} |`)
}
lines.push('')
lines.push('Per round, throughput ratio (p99 ratio): ' + table.map((t) => `${t.scenario} ${t.perRound.map((r) => `${f(r.rps, 2)} (${f(r.p99, 2)})`).join(' / ')}`).join('; '))
if (variantRows.length > 0) {
  lines.push('')
  lines.push('| scenario | variant (git ref) | req/s | ratio to baseline | p99 ratio to baseline | CPU µs/req | upstream/answer | service ÷ variant, req/s | service ÷ variant, CPU/req |')
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|')
  for (const v of variantRows) {
    lines.push(`| ${v.scenario} | ${v.label} (${v.ref}) | ${f(v.rps)} | ${f(v.rpsVsBaseline, 2)} | ${f(v.p99VsBaseline, 2)} | ${f(v.cpuPerRequest)} | ${f(v.upstreamPerRequest, 3)} | **${f(v.serviceRpsVsVariant, 3)}** | **${f(v.serviceCpuVsVariant, 3)}** |`)
  }
}
if (segmentLikeRuns.length > 0) {
  lines.push('')
  lines.push(`Segment-like upstream (30 ms, 1,000 requests/s per Write Key, 429 with Retry-After: 1 past it); offered ${settings.segmentLikeRate} track-events/s for ${settings.segmentLikeSeconds} s over ${settings.segmentLikeConnections} connections:`)
  lines.push('')
  lines.push('| side | answers/s (2xx) | answers by status | caller errors | p50 / p99 ms | upstream requests | upstream 429s | most requests in one second | events Segment accepted |')
  lines.push('|---|---:|---|---:|---:|---:|---:|---:|---:|')
  for (const r of segmentLikeRuns) {
    lines.push(`| ${r.role} | ${f(r.load.rps)} | ${Object.entries(r.load.statuses).map(([code, n]) => `${code}: ${n}`).join(', ')} | ${r.load.errors} | ${f(r.load.p50, 1)} / ${f(r.load.p99, 1)} | ${r.upstream.requests} | ${r.upstream.rateLimited} | ${r.upstream.peakPerSecond} | ${r.upstream.events} |`)
  }
}
if (floor !== undefined) {
  lines.push('')
  lines.push(`Batch floor (${floor.bodyBytes.toLocaleString('en')} B, 1,000 events; median CPU ms of ${floor.iterations} iterations): ` +
    `validate ${f(floor.ms.validate, 2)} + build ${f(floor.ms.build, 2)} + render and measure ${f(floor.ms.render, 2)} = ${f(floor.ms.service, 2)} ms; ` +
    `JSON.parse ${f(floor.ms.parse, 2)} + JSON.stringify and measure ${f(floor.ms.stringify, 2)} = ${f(floor.ms.floor, 2)} ms; ratio **${f(floor.ratio, 2)}** (median of per-iteration ratios)`)
}
if (memory !== undefined) {
  const m = memory
  lines.push('')
  lines.push(`Memory over ${m.requests.toLocaleString('en')} track-events (${f(m.load.rps)} req/s, ${m.load.non2xx + m.load.errors} failed), after GC: ` +
    `heap ${f(mib(m.start.heapUsed), 1)} → ${f(mib(m.end.heapUsed), 1)} MiB (${f(m.heapGrowth * 100, 1)} %), ` +
    `RSS ${f(mib(m.start.rss), 1)} → ${f(mib(m.end.rss), 1)} MiB; during the run (sockets open) heap after GC peaked at +${f(m.peakHeapGrowth * 100, 1)} % ` +
    `(${m.during.map((s) => `${f(s.at)} s: ${f(mib(s.heapUsed), 1)}`).join(', ')} MiB)`)
}
lines.push('')
lines.push('| target | value | limit | met |')
lines.push('|---|---:|---:|---|')
for (const t of targets) {
  lines.push(`| ${t.target} | ${t.value === undefined ? 'not measured' : f(t.value, 3)} | ${t.limit} | ${t.met === undefined ? '–' : t.met ? 'yes' : '**no**'} |`)
}
if (profile !== undefined) {
  lines.push('')
  const perRequest = (p: Profiled, ms: number): number => ms * 1000 / p.requests
  const baseline = profiles.baseline
  lines.push(`CPU profile under track-event (main thread; ${relative(root, profile.file)}): service busy ${f(perRequest(profile, profile.busyMs))} µs per request` +
    (baseline === undefined ? '' : `, baseline ${f(perRequest(baseline, baseline.busyMs))} µs per request`))
  lines.push('')
  lines.push('| area (inclusive) | service µs/req | baseline µs/req |')
  lines.push('|---|---:|---:|')
  for (const row of profile.inclusiveByArea.slice(0, 20)) {
    const other = baseline?.inclusiveByArea.find((r) => r.name === row.name)
    lines.push(`| ${row.name} | ${f(perRequest(profile, row.ms))} | ${other === undefined || baseline === undefined ? '–' : f(perRequest(baseline, other.ms))} |`)
  }
  lines.push('')
  lines.push('```text')
  lines.push(formatRows('Service functions, inclusive (share of busy time)', profile.inclusiveBySourceFrame.slice(0, 16)))
  lines.push('')
  lines.push(formatRows('Self time by frame', profile.topSelf.slice(0, 20)))
  lines.push('```')
}
const report = lines.join('\n')
console.log(report)

const results = { startedAt, machine, settings: { ...settings, postgres: postgresUrl !== undefined }, table, variantRows, segmentLikeRuns, targets, runs, floor, memory, profiles }
const stamp = startedAt.toISOString().replace(/[:.]/g, '-')
writeFileSync(join(resultsDir, `bench-${stamp}.json`), JSON.stringify(results, null, 2))
writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify(results, null, 2))
writeFileSync(join(resultsDir, 'latest.md'), report + '\n')
log(`results: bench/results/bench-${stamp}.json`)
