// What each step of a track-event costs on its own: CPU microseconds per call, in this process, on
// the real components (the app as `serve` builds it, a SQLite file, the fast fake Segment in its
// own process). The steps do not add up to a whole request: Fastify's routing, hooks and HTTP
// handling, promises and GC come on top, and the load run measures those. Run: `npm run bench:steps`.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { Pool } from 'undici'
import { buildApp, redactPaths } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { productionLogStream } from '../src/server.js'
import { buildUpstream } from '../src/segment/build.js'
import { TrackBody } from '../src/segment/schemas.js'
import { connectionAad } from '../src/store/crypto.js'
import { bearerToken, hashesEqual, hashToken, isWellFormedToken } from '../src/tokens.js'
import { bodyValidator } from './batch-floor.js'
import { start } from './processes.js'
import { BENCH_WRITE_KEY, trackJson } from './scenarios.js'
import { median } from './stats.js'

export interface StepResult {
  step: string
  /** Median over blocks of CPU microseconds (user + system) per call. */
  micros: number
}

const BLOCKS = 5

/** Runs `fn` `calls` times per block, after one block of warm-up; median CPU µs per call. */
async function time (calls: number, fn: () => unknown): Promise<number> {
  const perCall: number[] = []
  for (let block = 0; block <= BLOCKS; block++) {
    const since = process.cpuUsage()
    for (let i = 0; i < calls; i++) {
      const result = fn()
      if (result instanceof Promise) await result
    }
    const { user, system } = process.cpuUsage(since)
    if (block > 0) perCall.push((user + system) / calls)
  }
  return median(perCall)
}

export async function steps (childScript: string, calls = 20_000): Promise<StepResult[]> {
  const fake = await start({ script: childScript, role: 'fake', env: {} })
  const dataDir = mkdtempSync(join(tmpdir(), 'segment-forwarder-steps-'))
  const adminToken = randomBytes(16).toString('hex')
  // As `serve` writes (batched), to /dev/null; and, for comparison, one write per line.
  const devNull = productionLogStream('/dev/null')
  const unbatched = pino.destination({ dest: '/dev/null', sync: false })
  const app = await buildApp(loadConfig({
    NODE_ENV: 'production',
    LOG_LEVEL: 'info',
    ADMIN_TOKEN: adminToken,
    SEGMENT_API_URL: fake.url,
    DATABASE_URL: `sqlite:${join(dataDir, 'steps.db')}`
  }), { logStream: devNull })
  try {
    const workspace = await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: { authorization: `Bearer ${adminToken}` }, payload: { name: 'Steps' } })
    const token = workspace.json<{ token: string }>().token
    const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: { authorization: `Bearer ${token}` }, payload: { name: 'Steps', writeKey: BENCH_WRITE_KEY } })
    const connectionId = created.json<{ id: string }>().id
    const authorization = `Bearer ${token}`
    const hash = hashToken(token)
    const found = (await app.store.findTokenWithConnection(hash, connectionId))!
    const record = found.connection!
    const body = JSON.parse(trackJson) as object
    const validate = await bodyValidator(TrackBody)
    const build = { workspaceId: found.token.workspaceId, connectionId, maxEventBytes: 32_000, maxBatchBytes: 500_000 }
    const line = {
      reqId: '6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d',
      method: 'POST',
      route: '/v1/connections/:connectionId/actions/track-event',
      statusCode: 200,
      workspaceId: found.token.workspaceId,
      connectionId,
      action: 'track-event',
      events: 1,
      bytes: 1200,
      upstreamStatus: 200,
      attempts: 1,
      durationMs: 3.21
    }
    const redacted = pino({ redact: { paths: redactPaths, censor: '[redacted]' } }, devNull)
    const plain = redacted.child({}, { redact: [] })
    const plainUnbatched = pino({ redact: { paths: redactPaths, censor: '[redacted]' } }, unbatched).child({}, { redact: [] })
    // A service writes one line per request, with other work in between: in a tight loop (or with
    // only an event-loop turn between lines) a line arrives while the last write is still in the
    // thread pool, so any destination batches them and hides what a write per line costs. A 1 ms
    // timer between lines lets each write finish first, as it does between a request's lines.
    const pause = async (): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, 1)) }
    const pauseCalls = Math.ceil(calls / 10)
    const { metrics } = app
    const upstream = buildUpstream('track-event', body, build)
    const pool = new Pool(fake.url, { connections: 64, pipelining: 1 })
    const basic = { 'content-type': 'application/json', authorization: 'Basic ' + Buffer.from(BENCH_WRITE_KEY + ':').toString('base64') }
    const sendCalls = Math.ceil(calls / 4)

    const results: StepResult[] = []
    const step = async (name: string, fn: () => unknown, n = calls): Promise<void> => {
      results.push({ step: name, micros: await time(n, fn) })
    }
    await step('JSON.parse of the 1,127 B body (the baseline does it too)', () => JSON.parse(trackJson))
    await step('token: header, format and checksum, SHA-256, constant-time compare', () => {
      const presented = bearerToken(authorization)!
      return isWellFormedToken(presented) && hashesEqual(hash, hashToken(presented))
    })
    await step('store: token + connection in one read (SQLite, WAL)', async () => await app.store.findTokenWithConnection(hash, connectionId))
    await step('Write Key: AES-256-GCM open (a memo miss)', () => app.keyRing.open(record.secret, connectionAad(record.workspaceId, record.id)))
    await step('Write Key: memo hit (ConnectionService.ready)', () => app.connections.ready(record))
    await step('validate the body (ajv, the route\'s schema)', () => validate(body))
    await step('build the upstream body + render it with sentAt', () => buildUpstream('track-event', body, build).render(new Date()))
    await step('metrics: the 4 prom-client updates of a request', () => {
      metrics.payloadBytes.observe({ action: 'track-event' }, 1200)
      metrics.upstreamAttempts.inc({ status: '200' })
      metrics.upstreamLatency.observe({ status: '200' }, 0.002)
      metrics.requests.inc({ route: line.route, action: 'track-event', status: '200' })
    })
    await step('a 1 ms timer alone (included in the two rows below)', pause, pauseCalls)
    await step('log line + 1 ms timer, as `serve` writes (batched, no path redaction)', async () => { plain.info(line, 'request completed'); await pause() }, pauseCalls)
    await step('log line + 1 ms timer, one write per line (the unbatched destination)', async () => { plainUnbatched.info(line, 'request completed'); await pause() }, pauseCalls)
    await step('log line alone, with the logger\'s path redaction (tight loop)', () => { redacted.info(line, 'request completed') })
    await step('upstream: SegmentClient.send to the fast fake (one at a time)', async () => await app.segment.send({
      baseUrl: fake.url, path: upstream.path, writeKey: BENCH_WRITE_KEY, render: upstream.render
    }), sendCalls)
    await step('upstream: bare undici Pool.request + dump, as the baseline sends', async () => {
      const response = await pool.request({ path: '/v1/track', method: 'POST', headers: basic, body: JSON.stringify(body) })
      await response.body.dump()
    }, sendCalls)
    await pool.close()
    return results
  } finally {
    await app.close()
    devNull.flushSync()
    unbatched.flushSync()
    await fake.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const childScript = fileURLToPath(new URL('./child.js', import.meta.url))
  const results = await steps(childScript)
  console.log('| step | CPU µs per call |\n|---|---:|')
  for (const { step, micros } of results) console.log(`| ${step} | ${micros.toFixed(1)} |`)
}
