import t from 'tap'
import { request as httpRequest } from 'node:http'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startFakeSegment } from './fake-segment.js'
import { ADMIN_TOKEN, adminAuth } from './helper.js'
import { freePort } from './support/free-port.js'
import { startProcess, waitForOk, waitForStdout } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const IN_FLIGHT = 10
const UPSTREAM_DELAY_MS = 2500
const GRACE_MS = 10_000

/** One request on a brand-new TCP connection (never a pooled one): its status, or the socket error code. */
async function freshConnection (url: string): Promise<number | string> {
  return await new Promise((resolve) => {
    const req = httpRequest(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    req.end()
  })
}

async function json (response: Response): Promise<Record<string, unknown>> {
  return await response.json() as Record<string, unknown>
}

t.test('SIGTERM drains in-flight forwards, refuses new work, and exits 0', async (t) => {
  const fake = await startFakeSegment()
  t.teardown(() => fake.close())
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const proc = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      PORT: String(port),
      DATABASE_URL: `sqlite:${join(t.testdir(), 'segment-forwarder.db')}`,
      ADMIN_TOKEN,
      SEGMENT_API_URL: fake.url,
      SHUTDOWN_GRACE_MS: String(GRACE_MS),
      // This is about draining, not load shedding: a busy CI box must not turn the forwards into 503s.
      PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
      // Each forward its own upstream request, so all ten are in flight upstream at the signal
      // (coalesced, nine would wait for the first: coalesce.test.ts covers joining).
      COALESCE: 'off',
      LOG_LEVEL: 'info'
    }
  })
  const ready = await waitForOk(`${base}/readyz`, proc)
  t.equal(ready.headers.get('keep-alive'), 'timeout=72', 'keep-alive outlives a load balancer\'s 60 s idle timeout')

  const workspace = await json(await fetch(`${base}/v1/admin/workspaces`, {
    method: 'POST', headers: { ...adminAuth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Drain Agency' })
  }))
  const auth = { authorization: `Bearer ${String(workspace.token)}`, 'content-type': 'application/json' }
  const created = await fetch(`${base}/v1/connections`, {
    method: 'POST', headers: auth, body: JSON.stringify({ name: 'Client A', writeKey: 'wk_drain_0123456789abcdef' })
  })
  const connection = await json(created)
  if (created.status !== 201) throw new Error(`connection create failed: ${created.status} ${JSON.stringify(connection)}`)

  // Each forward sits upstream for 2.5 s, so all of them are mid-flight when the signal lands.
  fake.respondWith(Array.from({ length: IN_FLIGHT }, () => ({ delayMs: UPSTREAM_DELAY_MS })))
  let answered = 0
  const calls = Array.from({ length: IN_FLIGHT }, async (_, i) => {
    const response = await fetch(`${base}/v1/connections/${String(connection.id)}/actions/track-event`, {
      method: 'POST', headers: auth, body: JSON.stringify({ userId: `user-${i}`, event: 'Order Completed' })
    })
    const body = await json(response)
    answered++
    return { status: response.status, body, connection: response.headers.get('connection') }
  })
  await Promise.race([
    fake.waitForRequests(IN_FLIGHT),
    new Promise((_resolve, reject) => setTimeout(() => reject(new Error(`only ${fake.requests.length} of ${IN_FLIGHT} forwards reached the fake\n${proc.stdout()}`)), 30_000).unref())
  ])
  t.equal(answered, 0, 'nothing has been answered yet when the signal is sent')

  const signalledAt = Date.now()
  proc.child.kill('SIGTERM')
  await waitForStdout(proc, 'shutting down')
  const late = await freshConnection(`${base}/healthz`)
  t.ok(late === 'ECONNREFUSED' || late === 503, `a new connection during the drain is refused or answered 503 (got ${late})`)
  t.equal(answered, 0, 'and the in-flight forwards are still waiting on Segment')

  const results = await Promise.all(calls)
  t.same(results.map((r) => r.status), Array(IN_FLIGHT).fill(200), 'every in-flight caller got its answer')
  t.same(results.map((r) => r.body.status), Array(IN_FLIGHT).fill('accepted'), 'and every one was accepted')
  t.same(results.map((r) => r.connection), Array(IN_FLIGHT).fill('close'), 'with Connection: close, so no client reuses a closing socket')
  t.equal(fake.requests.length, IN_FLIGHT, 'nothing was sent twice')

  t.equal(await proc.exited, 0, 'exits 0')
  const drainMs = Date.now() - signalledAt
  t.ok(drainMs < GRACE_MS, `exits once drained, not at the grace deadline (${drainMs} ms)`)

  const lines = proc.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)
  t.ok(lines.some((line) => line.msg === 'shutting down: draining in-flight requests' && line.signal === 'SIGTERM'), 'logs the shutdown and its signal')
  t.equal(lines.filter((line) => line.msg === 'request completed' && line.action === 'track-event' && line.statusCode === 200).length, IN_FLIGHT, 'logs every drained request')
  t.equal(proc.stderr(), '', 'nothing on stderr')
})
