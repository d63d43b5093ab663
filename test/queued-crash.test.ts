// Queued delivery across process deaths: SIGKILL mid-delivery and a restart on the same SQLite
// file; two replicas on one PostgreSQL draining one queue, then one of them killed mid-lease.
// Every 202'd messageId must reach Segment at least once, and no event may be sent by two
// workers while the first one's lease holds it.
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { startFakeSegment, type FakeSegment } from './fake-segment.js'
import { ADMIN_TOKEN, adminAuth } from './helper.js'
import { freePort } from './support/free-port.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'
import { signalGroup, startProcess, waitForOk, type RunningProcess } from './support/process.js'
import { batchMessageIds, testKey, waitFor } from './support/queued.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const FAKE_DELAY_MS = 400

interface Replica { proc: RunningProcess, base: string }

async function startReplica (t: { teardown: (fn: () => unknown) => void }, env: Record<string, string>): Promise<Replica> {
  const port = await freePort()
  const proc = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
      RATE_LIMIT_MAX: '0',
      PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
      DELIVERY_LEASE_MS: '2000',
      DELIVERY_BACKOFF_MAX_MS: '50',
      SEGMENT_ATTEMPT_TIMEOUT_MS: '1000',
      PORT: String(port),
      ...env
    }
  })
  const base = `http://127.0.0.1:${port}`
  await waitForOk(`${base}/readyz`, proc)
  return { proc, base }
}

async function setupTenant (base: string): Promise<{ headers: Record<string, string>, connectionId: string }> {
  const workspace = await (await fetch(`${base}/v1/admin/workspaces`, {
    method: 'POST', headers: { ...adminAuth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Queue Agency' })
  })).json() as { token: string }
  const headers = { authorization: `Bearer ${workspace.token}`, 'content-type': 'application/json' }
  const connection = await (await fetch(`${base}/v1/connections`, { method: 'POST', headers, body: JSON.stringify({ name: 'Client', writeKey: 'wk_crash_0123456789' }) })).json() as { id: string }
  return { headers, connectionId: connection.id }
}

/** Queues `count` track events through `bases` in turn, a few at a time; returns the 202'd messageIds. */
async function queueEvents (bases: string[], headers: Record<string, string>, connectionId: string, count: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i += 10) {
    const answers = await Promise.all(Array.from({ length: Math.min(10, count - i) }, async (_x, j) => {
      const base = bases[(i + j) % bases.length]!
      const response = await fetch(`${base}/v1/connections/${connectionId}/actions/track-event`, {
        method: 'POST', headers: { ...headers, prefer: 'respond-async' }, body: JSON.stringify({ userId: `u${i + j}`, event: 'Queued' })
      })
      if (response.status !== 202) throw new Error(`expected 202, got ${response.status} ${await response.text()}`)
      return ((await response.json()) as { messageId: string }).messageId
    }))
    ids.push(...answers)
  }
  return ids
}

function sentIds (fake: FakeSegment): Set<string> {
  return new Set(fake.requests.flatMap(batchMessageIds))
}

t.test('SQLite: SIGKILL mid-delivery, restart on the same file: every 202\'d messageId is delivered', async (t) => {
  const fake = await startFakeSegment()
  t.teardown(() => fake.close())
  fake.fallback = { delayMs: FAKE_DELAY_MS }
  const env = { DATABASE_URL: `sqlite:${join(t.testdir(), 'segment-forwarder.db')}`, ENCRYPTION_KEYS: testKey(), SEGMENT_API_URL: fake.url }
  const first = await startReplica(t, env)
  const { headers, connectionId } = await setupTenant(first.base)
  const accepted = await queueEvents([first.base], headers, connectionId, 150)
  await waitFor('a delivery in flight', () => fake.requests.length >= 1 ? true : undefined)
  signalGroup(first.proc, 'SIGKILL')
  await first.proc.exited
  const inFlightAtKill = fake.requests.length
  t.comment(`killed with ${inFlightAtKill} upstream request(s) sent, ${sentIds(fake).size} of ${accepted.length} events sent`)

  const second = await startReplica(t, env)
  await waitFor('every accepted event delivered', () => {
    const sent = sentIds(fake)
    return accepted.every((id) => sent.has(id)) ? true : undefined
  })
  const list = await waitFor('every delivery recorded as delivered', async () => {
    const response = await fetch(`${second.base}/v1/connections/${connectionId}/deliveries?state=queued`, { headers })
    const body = await response.json() as { deliveries: unknown[] }
    return body.deliveries.length === 0 ? body : undefined
  })
  t.same(list.deliveries, [])
  const sent = sentIds(fake)
  t.ok(accepted.every((id) => sent.has(id)), `all ${accepted.length} messageIds reached Segment`)
})

t.test('PostgreSQL: two replicas drain one queue; no event sent twice inside its lease; one replica killed mid-lease', { skip: postgresSkip }, async (t) => {
  // One fake per replica (each replica's SEGMENT_API_URL), so the test knows who sent what.
  const fakeA = await startFakeSegment()
  const fakeB = await startFakeSegment()
  t.teardown(() => fakeA.close())
  t.teardown(() => fakeB.close())
  fakeA.fallback = { delayMs: FAKE_DELAY_MS }
  fakeB.fallback = { delayMs: FAKE_DELAY_MS }
  const env = { DATABASE_URL: await freshPostgresUrl(t), ENCRYPTION_KEYS: testKey(), DATABASE_POOL_SIZE: '5' }
  const a = await startReplica(t, { ...env, SEGMENT_API_URL: fakeA.url })
  const b = await startReplica(t, { ...env, SEGMENT_API_URL: fakeB.url })
  const { headers, connectionId } = await setupTenant(a.base)
  const allSent = (): Set<string> => new Set([...sentIds(fakeA), ...sentIds(fakeB)])

  // Phase 1: both replicas accept and deliver, nobody dies: every event is sent exactly once.
  const phase1 = await queueEvents([a.base, b.base], headers, connectionId, 200)
  await waitFor('phase 1 delivered', () => phase1.every((id) => allSent().has(id)) ? true : undefined)
  const counts = new Map<string, number>()
  for (const request of [...fakeA.requests, ...fakeB.requests]) for (const id of batchMessageIds(request)) counts.set(id, (counts.get(id) ?? 0) + 1)
  t.same([...counts.entries()].filter(([, n]) => n > 1), [], 'no event was sent by both replicas')
  t.ok(fakeA.requests.length > 0 && fakeB.requests.length > 0, `both replicas delivered (${fakeA.requests.length} and ${fakeB.requests.length} requests)`)
  t.ok(fakeA.requests.length + fakeB.requests.length < phase1.length, 'events were joined into shared requests')

  // Phase 2: kill replica A while it has a send in flight (the fake holds each answer FAKE_DELAY_MS).
  const beforeA = fakeA.requests.length
  const beforeB = fakeB.requests.length
  const phase2 = await queueEvents([b.base], headers, connectionId, 1).then(async (ids) => [...ids, ...await queueEvents([a.base, b.base], headers, connectionId, 200)])
  await waitFor('a send in flight on replica A', () => fakeA.requests.length > beforeA ? true : undefined)
  const killedAt = Date.now()
  signalGroup(a.proc, 'SIGKILL')
  await a.proc.exited
  // Everything A sent in phase 2 may come again (A may have died before recording an answer);
  // what the fake had not even answered when A died must come again.
  const heldByA = new Map<string, number>()
  const unanswered = new Set<string>()
  for (const request of fakeA.requests.slice(beforeA)) {
    for (const id of batchMessageIds(request)) {
      heldByA.set(id, request.receivedAt)
      if (request.receivedAt + FAKE_DELAY_MS > killedAt) unanswered.add(id)
    }
  }
  t.ok(unanswered.size > 0, `replica A was killed holding ${unanswered.size} unanswered event(s)`)
  await waitFor('phase 2 delivered by the survivor', () => phase2.every((id) => allSent().has(id)) ? true : undefined)

  await waitFor('nothing left queued', async () => {
    const queued = await (await fetch(`${b.base}/v1/connections/${connectionId}/deliveries?state=queued`, { headers })).json() as { deliveries: unknown[] }
    return queued.deliveries.length === 0 ? true : undefined
  })
  t.pass('every delivery recorded as delivered by the survivor')
  // B may resend only what A held when it died, and only once A's lease ran out: at least the
  // attempt timeout (1000 ms, a lower bound the protocol guarantees) after A's send.
  const problems: string[] = []
  const seenByB = new Set<string>()
  let resent = 0
  for (const request of fakeB.requests.slice(beforeB)) {
    for (const id of batchMessageIds(request)) {
      if (seenByB.has(id)) problems.push(`${id}: sent twice by the survivor`)
      seenByB.add(id)
      const sentByA = heldByA.get(id)
      if (sentByA === undefined) continue
      resent++
      if (request.receivedAt - sentByA < 1000) problems.push(`${id}: resent ${request.receivedAt - sentByA} ms after A sent it, inside A's lease`)
    }
  }
  t.comment(`${resent} event(s) that A held were resent by B`)
  t.same(problems, [])
  t.same([...unanswered].filter((id) => !seenByB.has(id)), [], 'B resent every event A died holding unanswered')
})
