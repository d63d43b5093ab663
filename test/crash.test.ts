// Crash safety of the stored Write Keys: SIGKILL (no shutdown hook runs, nothing is flushed by us)
// during Write Key rotations and during `rewrap` leaves every connection readable afterwards.
import { randomBytes } from 'node:crypto'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import t from 'tap'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { startFakeSegment } from './fake-segment.js'
import { ADMIN_TOKEN, adminAuth, createWorkspace, logCapture, resolveConnection } from './helper.js'
import { basicAuth } from './support/actions.js'
import { freePort } from './support/free-port.js'
import { signalGroup, startProcess, waitForOk, type RunningProcess } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const key = (fill: number): string => Buffer.alloc(32, fill).toString('base64')
const OLD = `old:${key(1)}`
const NEW = `new:${key(2)}`

type Json = Record<string, unknown>

function baseEnv (dbPath: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATABASE_URL: `sqlite:${dbPath}`,
    ADMIN_TOKEN,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_MAX: '0',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
    ...extra
  }
}

function cli (t: { teardown: (fn: () => unknown) => void }, args: string[], env: NodeJS.ProcessEnv): RunningProcess {
  return startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: root, env })
}

/** Opens the database in this process, as the service would, and reads every Write Key back. */
async function readAllKeys (dbPath: string, keys: string, workspaceId: string, ids: string[]): Promise<Map<string, string | Error>> {
  const config = loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, ENCRYPTION_KEYS: keys, LOG_LEVEL: 'silent' })
  const app = await buildApp(config, { logStream: logCapture().stream })
  try {
    await app.ready()
    const out = new Map<string, string | Error>()
    for (const id of ids) {
      try {
        out.set(id, (await resolveConnection(app, workspaceId, id)).writeKey)
      } catch (error) {
        out.set(id, error as Error)
      }
    }
    return out
  } finally {
    await app.close()
  }
}

function keyIds (dbPath: string): Record<string, number> {
  const db = new Database(dbPath, { readonly: true })
  try {
    const rows = db.prepare('SELECT key_id AS kid, count(*) AS n FROM connections GROUP BY key_id ORDER BY key_id').all() as Array<{ kid: string, n: number }>
    return Object.fromEntries(rows.map((row) => [row.kid, row.n]))
  } finally {
    db.close()
  }
}

t.test('SIGKILL during concurrent Write Key rotations: after restart every connection uses a key that was sent for it', async (t) => {
  const CONNECTIONS = 50
  const WORKERS = 8
  const dbPath = join(t.testdir(), 'segment-forwarder.db')
  const fake = await startFakeSegment()
  t.teardown(() => fake.close())
  const env = (port: number) => baseEnv(dbPath, { PORT: String(port), ENCRYPTION_KEYS: `${NEW},${OLD}`, SEGMENT_API_URL: fake.url })

  let port = await freePort()
  let base = `http://127.0.0.1:${port}`
  const first = cli(t, ['serve'], env(port))
  await waitForOk(`${base}/readyz`, first)

  const workspace = await (await fetch(`${base}/v1/admin/workspaces`, {
    method: 'POST', headers: { ...adminAuth, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Crash Agency' })
  })).json() as Json
  const headers = { authorization: `Bearer ${String(workspace.token)}`, 'content-type': 'application/json' }

  // Per connection: the last acknowledged key, and the one rotation in flight (at most one at a
  // time per connection, so "the last acknowledged or the in-flight one" is exact).
  const state: Array<{ id: string, acked: string, inFlight: string | undefined, version: number }> = []
  for (let i = 0; i < CONNECTIONS; i++) {
    const writeKey = `wk_c${i}_v0_${randomBytes(6).toString('hex')}`
    const response = await fetch(`${base}/v1/connections`, { method: 'POST', headers, body: JSON.stringify({ name: `Client ${i}`, writeKey }) })
    if (response.status !== 201) throw new Error(`connection create failed: ${response.status} ${await response.text()}`)
    state.push({ id: String(((await response.json()) as Json).id), acked: writeKey, inFlight: undefined, version: 0 })
  }

  const killAfter = 100 + Math.floor(Math.random() * 200)
  t.comment(`SIGKILL after ${killAfter} acknowledged rotations`)
  let acknowledged = 0
  let failedAfterKill = 0
  let killed = false
  const unexpected: string[] = []
  const worker = async (w: number) => {
    for (let n = 0; !killed; n++) {
      const idle = state.filter((s) => s.inFlight === undefined)
      const target = idle[Math.floor(Math.random() * idle.length)]
      if (target === undefined) { await new Promise((resolve) => setTimeout(resolve, 1)); continue }
      const writeKey = `wk_c${state.indexOf(target)}_v${++target.version}_w${w}_${randomBytes(6).toString('hex')}`
      target.inFlight = writeKey
      let status: number
      try {
        const response = await fetch(`${base}/v1/connections/${target.id}/write-key`, { method: 'PUT', headers, body: JSON.stringify({ writeKey }) })
        status = response.status
        await response.arrayBuffer()
      } catch {
        // Killed under us: whether this rotation was stored is unknown; both answers are allowed.
        failedAfterKill++
        return
      }
      if (status !== 200) {
        unexpected.push(`rotation of ${target.id} answered ${status}`)
        target.inFlight = undefined
        continue
      }
      target.acked = writeKey
      target.inFlight = undefined
      if (++acknowledged >= killAfter && !killed) {
        killed = true
        signalGroup(first, 'SIGKILL')
      }
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, async (_, w) => { await worker(w) }))
  t.equal(await first.exited, null, 'the service died of the signal')
  t.equal(first.child.signalCode, 'SIGKILL', 'by SIGKILL')
  t.same(unexpected, [], 'every answered rotation was a 200')
  const inFlightAtKill = state.filter((s) => s.inFlight !== undefined).length
  t.comment(`${acknowledged} rotations acknowledged; ${inFlightAtKill} in flight at the kill (${failedAfterKill} callers saw the connection drop)`)

  port = await freePort()
  base = `http://127.0.0.1:${port}`
  const second = cli(t, ['serve'], env(port))
  await waitForOk(`${base}/readyz`, second)

  // Through the service itself: an action on each connection, and the Basic header Segment got.
  const answers = await Promise.all(state.map(async (s, i) => {
    const response = await fetch(`${base}/v1/connections/${s.id}/actions/track-event`, {
      method: 'POST', headers, body: JSON.stringify({ userId: `crash-${i}`, event: 'After Restart' })
    })
    return { status: response.status, body: await response.text() }
  }))
  t.same(answers.filter((a) => a.status !== 200), [], 'every connection forwards after the restart')
  const sentWith = new Map(fake.requests.map((r) => [(r.body as Json).userId, r.headers.authorization]))
  let usedInFlight = 0
  const wrong: string[] = []
  state.forEach((s, i) => {
    const got = sentWith.get(`crash-${i}`)
    if (got === basicAuth(s.acked)) return
    if (s.inFlight !== undefined && got === basicAuth(s.inFlight)) { usedInFlight++; return }
    wrong.push(`${s.id}: sent ${String(got)}, acked ${s.acked}, in flight ${String(s.inFlight)}`)
  })
  t.same(wrong, [], 'each connection sends its last acknowledged key, or the rotation in flight at the kill')
  t.comment(`${usedInFlight} of ${inFlightAtKill} in-flight rotations had been stored before the kill`)
  signalGroup(second, 'SIGTERM')
  t.equal(await second.exited, 0, 'the restarted service stops cleanly')
})

t.test('SIGKILL during rewrap, repeatedly: a rerun completes and every connection opens under the new key alone', async (t) => {
  const CONNECTIONS = 500
  const dbPath = join(t.testdir(), 'segment-forwarder.db')

  // Seed 500 connections sealed under `old`, in this process.
  const originals = new Map<string, string>()
  const config = loadConfig({ DATABASE_URL: `sqlite:${dbPath}`, ENCRYPTION_KEYS: OLD, ADMIN_TOKEN, LOG_LEVEL: 'silent' })
  const seeding = await buildApp(config, { logStream: logCapture().stream })
  const workspace = await createWorkspace(seeding, 'Rewrap Agency')
  for (let i = 0; i < CONNECTIONS; i++) {
    const writeKey = `wk_r${i}_${randomBytes(8).toString('hex')}`
    const view = await seeding.connections.create(workspace.id, { name: `Client ${i}`, writeKey })
    originals.set(view.id, writeKey)
  }
  await seeding.close()
  const ids = [...originals.keys()]
  t.same(keyIds(dbPath), { old: CONNECTIONS }, 'seeded under the old key')

  const env = baseEnv(dbPath, { ENCRYPTION_KEYS: `${NEW},${OLD}` })
  // Three interrupted runs, each killed at a different moment, then one run to completion: at a
  // page boundary (just after a progress line), and twice mid-page, once the database shows a
  // random number of further rows re-sealed (a reader sees each committed swap at once in WAL mode).
  const watcher = new Database(dbPath, { readonly: true })
  t.teardown(() => watcher.close())
  const countNew = (): number => (watcher.prepare("SELECT count(*) AS n FROM connections WHERE key_id = 'new'").get() as { n: number }).n
  const midPage = (): { name: string, arm: (proc: RunningProcess, kill: () => void) => void } => {
    const extra = 1 + Math.floor(Math.random() * 150)
    return {
      name: `once ${extra} more rows were re-sealed`,
      arm: (proc, kill) => {
        const target = countNew() + extra
        const poll = (): void => {
          if (proc.child.exitCode !== null || proc.child.signalCode !== null) return
          if (countNew() >= target) kill()
          else setTimeout(poll, 1)
        }
        poll()
      }
    }
  }
  const kills: Array<{ name: string, arm: (proc: RunningProcess, kill: () => void) => void }> = [
    {
      name: 'at the first progress line',
      arm: (proc, kill) => { proc.child.stderr?.on('data', (chunk: Buffer) => { if (chunk.toString().includes('rewrap: scanned')) kill() }) }
    },
    midPage(),
    midPage()
  ]
  for (const { name, arm } of kills) {
    const proc = cli(t, ['rewrap'], env)
    let sent = false
    arm(proc, () => {
      if (sent || proc.child.exitCode !== null) return
      sent = true
      signalGroup(proc, 'SIGKILL')
    })
    const code = await proc.exited
    const progressLines = proc.stderr().split('\n').filter((line) => line.startsWith('rewrap: scanned')).length
    const outcome = proc.child.signalCode === 'SIGKILL' ? 'killed' : `exited ${code} before the kill`
    t.comment(`rewrap killed ${name}: ${outcome} after ${progressLines} progress line(s); rows by key now ${JSON.stringify(keyIds(dbPath))}`)
    t.ok(proc.child.signalCode === 'SIGKILL' || code === 0, `run ${name} was killed or finished cleanly`)

    // Between runs, with both keys (as replicas would run during a rewrap), everything opens.
    const keys = await readAllKeys(dbPath, `${NEW},${OLD}`, workspace.id, ids)
    const bad = ids.filter((id) => keys.get(id) !== originals.get(id))
    t.same(bad, [], `after the run killed ${name}, every connection decrypts to its original key`)
  }

  const finish = cli(t, ['rewrap'], env)
  t.equal(await finish.exited, 0, 'a rerun completes')
  t.match(finish.stdout(), `rewrap done: ${CONNECTIONS} connections scanned`, 'and reports every connection')
  t.same(keyIds(dbPath), { new: CONNECTIONS }, 'every row is sealed under the new key')

  const keys = await readAllKeys(dbPath, NEW, workspace.id, ids)
  const bad = ids.filter((id) => keys.get(id) !== originals.get(id)).map((id) => `${id}: ${String(keys.get(id))}`)
  t.same(bad.slice(0, 5), [], 'opened with the new key alone, every connection decrypts to its original key')
})
