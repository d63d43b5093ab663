// Fault injection under traffic: a few thousand forwards across all six actions, at some
// concurrency, through the real HTTP stack, against a fake Segment that resets, stalls, dribbles,
// fails, rate-limits, redirects and hangs at random (seeded; CHAOS_SEED reproduces a mix).
//
// Every caller must get either 200 (and then the fake received each returned messageId at least
// once) or a coded problem+json 502/503/504, within the deadline plus a margin; afterwards sockets
// and heap must return near where they started.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { AddressInfo, Socket } from 'node:net'
import { Writable } from 'node:stream'
import { loadavg } from 'node:os'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import t from 'tap'
import { Pool } from 'undici'
import { build, createConnection, createWorkspace, type TestWorkspace } from './helper.js'
import { defaultWeights, prng, startChaosSegment, type Fault } from './support/chaos-segment.js'
import type { ActionName } from './support/actions.js'

const SEED = process.env.CHAOS_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.CHAOS_SEED)
const REQUESTS = Number(process.env.CHAOS_REQUESTS ?? 2400)
// Small timeouts so faults bite quickly. Client, service and fake share one process: on a
// crowded machine even a plain 200 can take longer than 300 ms at this concurrency, and timeouts
// then dominate the outcomes (still within the contract). These env overrides help when chasing.
const CONCURRENCY = Number(process.env.CHAOS_CONCURRENCY ?? 32)
const ATTEMPT_TIMEOUT_MS = Number(process.env.CHAOS_ATTEMPT_TIMEOUT_MS ?? 300)
const DEADLINE_MS = Number(process.env.CHAOS_DEADLINE_MS ?? 1500)
const MAX_ATTEMPTS = 4
// Generous: a shared 2-core machine also runs the other test files.
const LATENCY_MARGIN_MS = 1500
// Bounds the file on a crowded machine: past this, workers take no new requests.
const RUN_BUDGET_MS = Number(process.env.CHAOS_BUDGET_MS ?? 45_000)
const MIN_REQUESTS = 300
const HEAP_GROWTH_LIMIT = 50 * 1024 * 1024

const zeroWeights = Object.fromEntries(Object.keys(defaultWeights).map((fault) => [fault, 0])) as Record<Fault, number>
const actionNames: ActionName[] = ['track-event', 'identify-user', 'group-user', 'page-view', 'alias-user', 'batch-send']
const allowed: Record<number, string[]> = { 502: ['segment_rejected'], 503: ['segment_unavailable'], 504: ['segment_timeout'] }

/** A valid body for each action; some carry the caller's own messageIds. */
function bodyFor (action: ActionName, i: number, random: () => number): Record<string, unknown> {
  const own = random() < 0.2 ? { messageId: `caller-${SEED}-${i}` } : {}
  switch (action) {
    case 'track-event': return { userId: `user-${i}`, event: 'Order Completed', properties: { i, revenue: 9.5 }, ...own }
    case 'identify-user': return { userId: `user-${i}`, traits: { plan: 'pro', n: i }, ...own }
    case 'group-user': return { anonymousId: `anon-${i}`, groupId: `acct-${i % 17}`, traits: { name: 'Initech' }, ...own }
    case 'page-view': return { anonymousId: `anon-${i}`, name: 'Pricing', properties: { url: 'https://example.com/p' }, ...own }
    case 'alias-user': return { previousId: `anon-${i}`, userId: `user-${i}`, ...own }
    case 'batch-send': {
      const count = 1 + Math.floor(random() * 5)
      return {
        context: { source: 'chaos' },
        batch: Array.from({ length: count }, (_, k) => k % 2 === 0
          ? { type: 'track', userId: `user-${i}`, event: `Step ${k}`, ...(k === 0 ? own : {}) }
          : { type: 'identify', anonymousId: `anon-${i}-${k}`, traits: { k } })
      }
    }
  }
}

/** gc(), when this node lets us have it: --expose-gc, or the same flag set at run time. */
function getGc (): (() => void) | undefined {
  const existing = (globalThis as { gc?: () => void }).gc
  if (typeof existing === 'function') return existing
  try {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as unknown
    return typeof gc === 'function' ? gc as () => void : undefined
  } catch {
    return undefined
  }
}

async function heapAfterGc (gc: () => void): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return process.memoryUsage().heapUsed
}

function tcpHandles (): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'TCPSocketWrap').length
}

async function settle (check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return await check()
}

/**
 * Log lines go nowhere (thousands of them would count as heap growth). Kept: error lines other
 * than the per-request line of an expected 5xx (request-log writes 502/503/504 at level error).
 */
function errorLog (): { stream: Writable, errorLines: string[] } {
  const errorLines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!/"level":(50|60)/.test(line)) continue
        const entry = JSON.parse(line) as { msg?: string, statusCode?: number }
        if (entry.msg === 'request completed' && entry.statusCode !== undefined && entry.statusCode in allowed) continue
        errorLines.push(line)
      }
      callback()
    }
  })
  return { stream, errorLines }
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`

t.test('mixed upstream faults under concurrent traffic: every caller gets 200 or a coded error, in time, and nothing leaks', async (t) => {
  t.comment(`CHAOS_SEED=${SEED} requests=${REQUESTS} concurrency=${CONCURRENCY}`)
  const started = Date.now()
  // CHAOS_WEIGHTS='{"ok":1,"hang":1}' narrows the mix when chasing one fault.
  const weights = process.env.CHAOS_WEIGHTS === undefined ? undefined : { ...zeroWeights, ...JSON.parse(process.env.CHAOS_WEIGHTS) as Partial<Record<Fault, number>> }
  const chaos = await startChaosSegment({ seed: SEED, attemptTimeoutMs: ATTEMPT_TIMEOUT_MS, ...(weights === undefined ? {} : { weights }) })
  t.teardown(() => chaos.close())

  const { stream: logStream, errorLines } = errorLog()
  const { app } = await build(t, {
    SEGMENT_API_URL: chaos.url,
    SEGMENT_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_TIMEOUT_MS),
    SEGMENT_DEADLINE_MS: String(DEADLINE_MS),
    SEGMENT_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    RATE_LIMIT_MAX: '0',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0'
  }, { logStream })
  const workspace: TestWorkspace = await createWorkspace(app)
  const connectionIds = [
    (await createConnection(app, workspace, { writeKey: 'wk_chaos_a_0123456789' })).id,
    (await createConnection(app, workspace, { writeKey: 'wk_chaos_b_0123456789' })).id
  ]
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const random = prng(SEED ^ 0x5eed)
  const latencies: number[] = []
  const lateness: Array<{ i: number, action: ActionName, ms: number }> = []
  const histogram = new Map<string, number>()
  const problems: string[] = []
  const count = (key: string) => histogram.set(key, (histogram.get(key) ?? 0) + 1)
  const reasons = new Map<string, number>()
  let accepted = 0
  let checkedIds = 0

  let issued = 0
  async function run (client: Pool, from: number, to: number, record: boolean, budgetMs = Infinity): Promise<void> {
    let next = from
    const stopAt = performance.now() + budgetMs
    const worker = async () => {
      for (let i = next++; i < to && performance.now() < stopAt; i = next++) {
        if (record) issued++
        const action = actionNames[i % actionNames.length]!
        const body = bodyFor(action, i, random)
        const idempotent = random() < 0.3
        const t0 = performance.now()
        let status: number
        let text: string
        let contentType: string
        try {
          const response = await client.request({
            method: 'POST',
            path: `/v1/connections/${connectionIds[i % 2]!}/actions/${action}`,
            headers: { ...workspace.auth, 'content-type': 'application/json', ...(idempotent ? { 'idempotency-key': `chaos-${SEED}-${i}` } : {}) },
            body: JSON.stringify(body)
          })
          status = response.statusCode
          contentType = String(response.headers['content-type'])
          text = await response.body.text()
        } catch (error) {
          if (record) {
            count(`client error ${(error as { code?: string }).code ?? (error as Error).name}`)
            problems.push(`#${i} ${action}: the caller got no answer: ${(error as Error).message}`)
          }
          continue
        }
        const ms = performance.now() - t0
        if (!record) continue
        latencies.push(ms)
        lateness.push({ i, action, ms })
        let json: Record<string, unknown>
        try {
          json = JSON.parse(text) as Record<string, unknown>
        } catch {
          count(`${status} non-json`)
          problems.push(`#${i} ${action}: ${status} with a non-JSON body ${text.slice(0, 200)}`)
          continue
        }
        if (status === 200) {
          count('200 accepted')
          accepted++
          const ids = action === 'batch-send' ? json.messageIds as string[] : [json.messageId as string]
          if (json.status !== 'accepted' || !Array.isArray(ids) || ids.length === 0) problems.push(`#${i} ${action}: 200 without messageIds: ${text}`)
          for (const id of ids ?? []) {
            checkedIds++
            if (!chaos.received.has(id)) problems.push(`#${i} ${action}: 200 with messageId ${id} that Segment never received`)
          }
          continue
        }
        count(`${status} ${String(json.code)}`)
        const why = String(json.detail).replace(/\d+/g, 'N')
        reasons.set(why, (reasons.get(why) ?? 0) + 1)
        const codes = allowed[status]
        if (codes === undefined || !codes.includes(String(json.code))) {
          problems.push(`#${i} ${action}: ${status} ${text.slice(0, 300)}`)
        } else if (!contentType.startsWith('application/problem+json') || typeof json.title !== 'string' || typeof json.detail !== 'string' || json.status !== status) {
          problems.push(`#${i} ${action}: ${status} is not a complete problem document: ${contentType} ${text.slice(0, 300)}`)
        }
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  }

  // Warm-up (JIT, pools, lazily built schemas) before the baselines are taken.
  const warmClient = new Pool(base, { connections: CONCURRENCY, headersTimeout: 30_000, bodyTimeout: 30_000 })
  await run(warmClient, 0, 60, false)
  await warmClient.close()
  const gc = getGc()
  await settle(async () => await chaos.openSockets() === 0 && chaos.pendingTimers === 0, 5000)
  const startSockets = { fake: await chaos.openSockets(), handles: tcpHandles() }
  const startHeap = gc === undefined ? undefined : await heapAfterGc(gc)

  const client = new Pool(base, { connections: CONCURRENCY, headersTimeout: 30_000, bodyTimeout: 30_000 })
  const runStarted = performance.now()
  const cpuStarted = process.cpuUsage()
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  let peakFakeSockets = 0
  const sampler = setInterval(() => {
    chaos.openSockets().then((n) => { peakFakeSockets = Math.max(peakFakeSockets, n) }, () => {})
  }, 100)
  await run(client, 60, 60 + REQUESTS, true, RUN_BUDGET_MS)
  clearInterval(sampler)
  const runMs = performance.now() - runStarted
  loopDelay.disable()
  const cpu = process.cpuUsage(cpuStarted)
  await client.close()

  latencies.sort((a, b) => a - b)
  const pct = (p: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0)
  t.comment(`run: ${Math.round(runMs)} ms, ${latencies.length} answers, latency p50 ${pct(0.5)} p90 ${pct(0.9)} p99 ${pct(0.99)} max ${pct(1)} ms`)
  t.comment(`this process: cpu ${Math.round((cpu.user + cpu.system) / 1000)} ms over the run; event-loop delay p50 ${Math.round(loopDelay.percentile(50) / 1e6)} p99 ${Math.round(loopDelay.percentile(99) / 1e6)} max ${Math.round(loopDelay.max / 1e6)} ms; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  t.comment(`outcomes: ${JSON.stringify(Object.fromEntries([...histogram].sort()))}`)
  t.comment(`error details: ${JSON.stringify(Object.fromEntries([...reasons].sort((a, b) => b[1] - a[1])), null, 1)}`)
  t.comment(`faults drawn (${chaos.requests} upstream requests): ${JSON.stringify(Object.fromEntries([...chaos.faults].sort()))}`)

  // The deadline is enforced in this same process, so on a crowded machine every timer and every
  // answer can land late by the event loop's delay: the margin grows with the delay measured.
  const margin = Math.max(LATENCY_MARGIN_MS, 1000 + 3 * loopDelay.max / 1e6)
  for (const { i, action, ms } of lateness) {
    if (ms > DEADLINE_MS + margin) problems.push(`#${i} ${action}: answered after ${Math.round(ms)} ms`)
  }
  t.comment(`latency bound: deadline ${DEADLINE_MS} + margin ${Math.round(margin)} ms`)
  if (issued < REQUESTS) t.comment(`the ${RUN_BUDGET_MS} ms budget ran out after ${issued} of ${REQUESTS} requests`)
  t.ok(issued >= Math.min(REQUESTS, MIN_REQUESTS), `${issued} requests sent`)
  t.equal(latencies.length, issued, 'every request got an answer')
  t.same(problems.slice(0, 20), [], `no answer broke the contract (${problems.length} did)`)
  t.same(errorLines.slice(0, 5), [], 'the app logged no errors')
  t.ok(checkedIds >= accepted, `${accepted} accepted, ${checkedIds} messageIds checked against what Segment received`)
  // On a starved machine (other jobs hogging the cores) the loop stalls past the 300 ms attempt
  // timeout and nearly every attempt times out: the contract above still holds, but the mix of
  // outcomes degenerates, so its variety is only required when the loop kept up.
  const starved = loopDelay.percentile(99) / 1e6 > 150
  if (starved) {
    t.comment(`event loop starved (p99 delay ${Math.round(loopDelay.percentile(99) / 1e6)} ms): the variety of outcomes is not asserted`)
  } else {
    t.ok(accepted > 0 && histogram.size >= 3, 'the mix produced several kinds of outcome, acceptances included')
  }

  // Afterwards: client pool closed; the upstream sockets drain (aborted attempts are destroyed,
  // idle keep-alive ones time out on the fake's side within 0.5 s).
  const socketsBack = await settle(async () => await chaos.openSockets() <= startSockets.fake && tcpHandles() <= startSockets.handles + 2, 10_000)
  const endSockets = { fake: await chaos.openSockets(), handles: tcpHandles() }
  t.comment(`sockets: fake server ${startSockets.fake} → peak ${peakFakeSockets} → ${endSockets.fake}; TCP handles in this process ${startSockets.handles} → ${endSockets.handles}`)
  t.ok(socketsBack, 'open sockets return to their starting point')
  t.equal(chaos.pendingTimers, 0, 'no delayed answer is still pending on the fake')

  if (gc === undefined || startHeap === undefined) {
    t.comment('no gc() available: the heap assertion is skipped')
  } else {
    const endHeap = await heapAfterGc(gc)
    t.comment(`heapUsed after gc: ${mb(startHeap)} → ${mb(endHeap)} (${endHeap >= startHeap ? '+' : ''}${mb(endHeap - startHeap)})`)
    t.ok(endHeap - startHeap < HEAP_GROWTH_LIMIT, `heap returns near its start (growth under ${mb(HEAP_GROWTH_LIMIT)})`)
  }
  t.comment(`total ${Math.round((Date.now() - started) / 1000)} s`)
})

t.test('a caller that hangs up frees its upstream request at once, and keep-alive sockets gather no listeners', async (t) => {
  // Every request to `hanging` hangs, and the attempt timeout is long, so only the caller's
  // hang-up can end the upstream request early. `healthy` answers 200 at once.
  const hanging = await startChaosSegment({ seed: SEED, attemptTimeoutMs: 10_000, weights: { ...zeroWeights, hang: 1 } })
  t.teardown(() => hanging.close())
  const healthy = await startChaosSegment({ seed: SEED, attemptTimeoutMs: 10_000, weights: { ...zeroWeights, ok: 1 } })
  t.teardown(() => healthy.close())
  const { stream: logStream, errorLines } = errorLog()
  const { app } = await build(t, {
    SEGMENT_API_URL: hanging.url,
    SEGMENT_ALLOWED_ENDPOINTS: healthy.url,
    SEGMENT_ATTEMPT_TIMEOUT_MS: '10000',
    SEGMENT_DEADLINE_MS: '20000',
    RATE_LIMIT_MAX: '0',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0'
  }, { logStream })
  const workspace = await createWorkspace(app)
  const { id: hangingId } = await createConnection(app, workspace)
  const { id: healthyId } = await createConnection(app, workspace, { endpoint: healthy.url })
  const serverSockets: Socket[] = []
  app.server.on('connection', (socket: Socket) => serverSockets.push(socket))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const headers = { ...workspace.auth, 'content-type': 'application/json' }

  const client = new Pool(base, { connections: 1 })
  const hangUp = new AbortController()
  const pending = client.request({
    method: 'POST',
    path: `/v1/connections/${hangingId}/actions/track-event`,
    headers,
    body: JSON.stringify({ userId: 'u1', event: 'Left Early' }),
    signal: hangUp.signal
  }).catch((error: unknown) => error)
  t.ok(await settle(async () => hanging.unanswered === 1, 5000), 'the forward is waiting on Segment')
  const hungUpAt = performance.now()
  hangUp.abort()
  await pending
  t.ok(await settle(async () => hanging.unanswered === 0, 5000), 'the upstream request is dropped after the caller hangs up')
  const freedMs = performance.now() - hungUpAt
  t.ok(freedMs < 3000, `well before the 10 s attempt timeout (${Math.round(freedMs)} ms)`)

  await client.destroy()

  // Many forwards answered on one keep-alive socket: no listener per request stays on it.
  serverSockets.length = 0
  const keepAlive = new Pool(base, { connections: 1 })
  t.teardown(() => keepAlive.close())
  for (let i = 0; i < 30; i++) {
    const response = await keepAlive.request({
      method: 'POST',
      path: `/v1/connections/${healthyId}/actions/track-event`,
      headers,
      body: JSON.stringify({ userId: `u${i}`, event: 'Kept Alive' })
    })
    t.equal(response.statusCode, 200, `forward ${i} accepted`)
    await response.body.dump()
  }
  const live = serverSockets.filter((socket) => !socket.destroyed)
  t.equal(live.length, 1, 'the 30 forwards shared one socket')
  t.ok((live[0]?.listenerCount('close') ?? 0) < 10, `close listeners on it stay few (${live[0]?.listenerCount('close')})`)
  t.same(errorLines, [], 'the app logged no errors')
})
