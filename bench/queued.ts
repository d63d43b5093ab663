// Queued delivery against sync delivery, on the embedded SQLite default, one service process:
//   1. sync:   track-event calls, each forwarded at once (fake Segment answers 200);
//   2. accept: the same calls with `Prefer: respond-async`, while the fake answers 429 with a long
//              Retry-After, so the workers pace the Write Key and stay idle: the accept path alone;
//   3. drain:  the service stopped, the queue made due (one UPDATE in the file), the service
//              started against a fake answering 200: delivery throughput, upstream requests per event.
// CPU is the service process's user+system time from /proc, per request or per event.
// Usage: npm run bench:queued [-- --seconds 10 --connections 10]
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import Database from 'better-sqlite3'
import { load } from './load.js'
import { trackEvent } from './scenarios.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '10' } } })
const seconds = Number(values.seconds)
const connections = Number(values.connections)
const log = (line: string): void => { process.stderr.write(`${line}\n`) }

// --- a fake Segment that counts requests and events, and answers as told ------------------------
let mode: 'ok' | 'limited' = 'ok'
let upstreamRequests = 0
let upstreamEvents = 0
const fake: Server = createServer((request, response) => {
  const chunks: Buffer[] = []
  request.on('data', (chunk: Buffer) => chunks.push(chunk))
  request.on('end', () => {
    if (mode === 'limited') {
      response.writeHead(429, { 'retry-after': '300' })
      response.end()
      return
    }
    upstreamRequests++
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { batch?: unknown[] }
    upstreamEvents += body.batch?.length ?? 1
    response.writeHead(200, { 'content-type': 'application/json' })
    response.end('{"success":true}')
  })
})
fake.keepAliveTimeout = 120_000
await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve))
const fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`

// --- the service -------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'sf-bench-queued-'))
const dbPath = join(dir, 'segment-forwarder.db')
const adminToken = randomBytes(16).toString('hex')
const env = {
  PATH: process.env.PATH ?? '',
  NODE_ENV: 'production',
  PORT: '0',
  LOG_LEVEL: 'warn',
  DATABASE_URL: `sqlite:${dbPath}`,
  ENCRYPTION_KEYS: `bench:${randomBytes(32).toString('base64')}`,
  ADMIN_TOKEN: adminToken,
  SEGMENT_API_URL: fakeUrl,
  RATE_LIMIT_MAX: '0',
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
  QUEUE_MAX_EVENTS: '100000000'
}

interface Service { child: ChildProcess, base: string }

async function startService (port: number): Promise<Service> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], { cwd: root, env: { ...env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'] })
  const base = `http://127.0.0.1:${port}`
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) return { child, base }
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function stopService (service: Service): Promise<void> {
  const exited = new Promise((resolve) => service.child.once('exit', resolve))
  service.child.kill('SIGTERM')
  await exited
}

/** User + system CPU seconds of a process so far. */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const port = 20000 + Math.floor(Math.random() * 20000)
let service = await startService(port)
const workspace = await (await fetch(`${service.base}/v1/admin/workspaces`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: '{"name":"bench"}' })).json() as { token: string }
const auth = { authorization: `Bearer ${workspace.token}`, 'content-type': 'application/json' }
const connection = await (await fetch(`${service.base}/v1/connections`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'bench', writeKey: 'wk_bench_0123456789abcdef' }) })).json() as { id: string }
const actionPath = `/v1/connections/${connection.id}/actions/track-event`
const body = JSON.stringify(trackEvent())

async function phase (name: string, headers: Record<string, string>): Promise<{ rps: number, cpuPerRequestUs: number, requests: number }> {
  // A short warm-up, then the measured run.
  await load({ url: service.base, connections, duration: 2, requests: [{ method: 'POST', path: actionPath, headers: { ...auth, ...headers }, body }] })
  const pid = service.child.pid!
  const before = cpuSeconds(pid)
  const result = await load({ url: service.base, connections, duration: seconds, requests: [{ method: 'POST', path: actionPath, headers: { ...auth, ...headers }, body }] })
  const cpu = cpuSeconds(pid) - before
  log(`${name}: ${result.rps.toFixed(0)} req/s, ${(cpu / result.requests * 1e6).toFixed(0)} µs CPU/req, non-2xx ${result.non2xx}, errors ${result.errors}`)
  return { rps: result.rps, cpuPerRequestUs: cpu / result.requests * 1e6, requests: result.requests }
}

const sync = await phase('sync track-event', {})
// Paced: the first queued delivery meets a 429 with Retry-After 300, then the workers leave the
// Write Key alone, so this phase measures accepting only.
mode = 'limited'
const queued = await phase('queued track-event (accept)', { prefer: 'respond-async' })
await stopService(service)

const db = new Database(dbPath)
const { n: queuedEvents } = db.prepare("SELECT coalesce(sum(events), 0) AS n FROM deliveries WHERE state = 'queued'").get() as { n: number }
db.prepare("UPDATE deliveries SET next_attempt_ms = 0 WHERE state = 'queued'").run()
db.close()

mode = 'ok'
upstreamRequests = 0
upstreamEvents = 0
service = await startService(port)
const pid = service.child.pid!
const cpuBefore = cpuSeconds(pid)
const drainStart = performance.now()
const drained = (): boolean => upstreamEvents >= queuedEvents
while (!drained()) await new Promise((resolve) => setTimeout(resolve, 20))
const drainSeconds = (performance.now() - drainStart) / 1000
const drainCpu = cpuSeconds(pid) - cpuBefore
await stopService(service)
fake.close()
fake.closeAllConnections()
rmSync(dir, { recursive: true, force: true })

const report = {
  date: new Date().toISOString(),
  seconds,
  connections,
  sync,
  queued,
  acceptRatio: queued.rps / sync.rps,
  acceptCpuRatio: queued.cpuPerRequestUs / sync.cpuPerRequestUs,
  drain: {
    events: queuedEvents,
    seconds: drainSeconds,
    eventsPerSecond: queuedEvents / drainSeconds,
    upstreamRequests,
    upstreamRequestsPerEvent: upstreamRequests / upstreamEvents,
    cpuPerEventUs: drainCpu / queuedEvents * 1e6
  }
}
log(`drain: ${queuedEvents} events in ${drainSeconds.toFixed(2)} s (${report.drain.eventsPerSecond.toFixed(0)} events/s), ${upstreamRequests} upstream requests (${report.drain.upstreamRequestsPerEvent.toFixed(4)} per event), ${report.drain.cpuPerEventUs.toFixed(0)} µs CPU/event`)
mkdirSync(join(root, 'bench', 'results'), { recursive: true })
writeFileSync(join(root, 'bench', 'results', 'queued.json'), JSON.stringify(report, null, 2) + '\n')
process.stdout.write(JSON.stringify(report, null, 2) + '\n')
