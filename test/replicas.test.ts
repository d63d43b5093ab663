// Several replicas of the service on one PostgreSQL, as separate processes over real HTTP: what one
// replica writes (workspaces, connections, rotated Write Keys, revoked tokens), every other one uses
// on its very next request; and `rewrap` re-seals every Write Key while replicas serve and rotate.
import { randomBytes } from 'node:crypto'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import t, { type Test } from 'tap'
import { migrations } from '../src/store/migrations.js'
import { startFakeSegment, type FakeSegment } from './fake-segment.js'
import { ADMIN_TOKEN } from './helper.js'
import { freePort } from './support/free-port.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'
import { signalGroup, startProcess, waitForOk, type RunningProcess } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
// A tsx start takes seconds on a busy 2-core machine; several start at once here.
const START_TIMEOUT_MS = 90_000

type Json = Record<string, any>

interface Answer {
  status: number
  body: Json
  headers: Headers
}

interface Replica {
  base: string
  proc: RunningProcess
}

const basic = (writeKey: string): string => 'Basic ' + Buffer.from(writeKey + ':').toString('base64')
const newKey = (kid: string): string => `${kid}:${randomBytes(32).toString('base64')}`

/** One HTTP request; a bearer token when given, a JSON body when given. */
async function call (base: string, method: string, path: string, token?: string, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = {}
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  const text = await response.text()
  return { status: response.status, body: text === '' ? {} : JSON.parse(text) as Json, headers: response.headers }
}

/** A plain client on the test's database, for looking at what the replicas stored. */
async function openClient (t: Test, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url })
  // The database is dropped WITH (FORCE) at teardown, perhaps before this client ends.
  client.on('error', () => {})
  await client.connect()
  t.teardown(async () => { await client.end().catch(() => {}) })
  return client
}

async function distinctPorts (count: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) ports.add(await freePort())
  return [...ports]
}

function serviceEnv (env: Record<string, string>): Record<string, string | undefined> {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ADMIN_TOKEN,
    LOG_LEVEL: 'warn',
    // Every request must succeed here, so neither the per-workspace budget nor load shedding on a
    // busy test machine may answer for the service.
    RATE_LIMIT_MAX: '0',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
    ...env
  }
}

/** Starts `serve` on each port at once (so their migrations race) and waits until all are ready. */
async function startReplicas (t: Test, count: number, env: Record<string, string>): Promise<Replica[]> {
  const ports = await distinctPorts(count)
  const replicas = ports.map((port) => ({
    base: `http://127.0.0.1:${port}`,
    proc: startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], { cwd: root, env: serviceEnv({ ...env, PORT: String(port) }) })
  }))
  await Promise.all(replicas.map(async ({ base, proc }) => await waitForOk(`${base}/readyz`, proc, START_TIMEOUT_MS)))
  return replicas
}

async function stopReplica (t: Test, replica: Replica): Promise<void> {
  signalGroup(replica.proc, 'SIGTERM')
  t.equal(await replica.proc.exited, 0, `${replica.base} exits 0 on SIGTERM`)
}

async function createWorkspace (base: string, name: string): Promise<{ id: string, token: string }> {
  const answer = await call(base, 'POST', '/v1/admin/workspaces', ADMIN_TOKEN, { name })
  if (answer.status !== 201) throw new Error(`workspace create: ${answer.status} ${JSON.stringify(answer.body)}`)
  return { id: answer.body.id, token: answer.body.token }
}

async function createConnection (base: string, token: string, name: string, writeKey: string): Promise<string> {
  const answer = await call(base, 'POST', '/v1/connections', token, { name, writeKey })
  if (answer.status !== 201) throw new Error(`connection create: ${answer.status} ${JSON.stringify(answer.body)}`)
  return answer.body.id
}

/** Diagnostics for a failed assertion: the answer and the end of the replica's log. */
function diag (replica: Replica, answer: Answer): { body: Json, log: string } {
  return { body: answer.body, log: (replica.proc.stdout() + replica.proc.stderr()).slice(-3000) }
}

let sequence = 0
/** A track-event through `base`; resolves to the answer and the request the fake received for it. */
async function track (base: string, token: string, connectionId: string, fake: FakeSegment): Promise<{ answer: Answer, authorization: string | undefined }> {
  const messageId = `msg-${process.pid}-${++sequence}`
  const answer = await call(base, 'POST', `/v1/connections/${connectionId}/actions/track-event`, token, {
    userId: `user-${connectionId}`, event: 'Replica Checked', messageId
  })
  const received = fake.requests.find((r) => (r.body as Json | undefined)?.messageId === messageId)
  return { answer, authorization: received?.headers.authorization }
}

t.test('the service refuses to start on PostgreSQL without ENCRYPTION_KEYS, in one clear line', async (t) => {
  const port = await freePort()
  await Promise.all([undefined, ''].map(async (keys) => {
    const proc = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
      cwd: root,
      env: serviceEnv({
        PORT: String(port),
        DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/never_opened',
        ...(keys === undefined ? {} : { ENCRYPTION_KEYS: keys })
      })
    })
    const label = keys === undefined ? 'unset' : 'empty'
    t.equal(await proc.exited, 1, `ENCRYPTION_KEYS ${label}: exit code 1`)
    t.equal(proc.stderr(), 'segment-forwarder: configuration error: ENCRYPTION_KEYS: must be set when DATABASE_URL is PostgreSQL: ' +
      'replicas must share one key ring, so none may generate its own\n', `ENCRYPTION_KEYS ${label}: one line on stderr`)
    t.equal(proc.stdout(), '', `ENCRYPTION_KEYS ${label}: nothing on stdout`)
  }))
})

t.test('replicas on one PostgreSQL through a key rollout: shared state, rotations, revocations, rewrap under traffic', { skip: postgresSkip }, async (t) => {
  const CONNECTIONS = 60
  const fake = await startFakeSegment()
  t.teardown(() => fake.close())
  const databaseUrl = await freshPostgresUrl(t)
  const oldKey = newKey('old')
  const nextKey = newKey('new')
  const common = { DATABASE_URL: databaseUrl, SEGMENT_API_URL: fake.url }
  const db = await openClient(t, databaseUrl)

  // Phase 1: replicas A and B start together on an empty database (their migrations race), with
  // ENCRYPTION_KEYS=old.
  let [a, b] = await startReplicas(t, 2, { ...common, ENCRYPTION_KEYS: oldKey }) as [Replica, Replica]
  const applied = await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')
  t.same(applied.rows.map((r) => r.version), migrations.map((m) => m.version), 'both migrated the same database at once; each migration applied once')

  // A workspace and a connection made through A are there on B.
  const workspace = await createWorkspace(a.base, 'Replicated Agency')
  const listed = await call(b.base, 'GET', '/v1/admin/workspaces', ADMIN_TOKEN)
  t.ok(listed.body.workspaces.some((w: Json) => w.id === workspace.id), 'B lists the workspace A made')
  const firstKey = 'wk_replica_v0_0123456789abcdef'
  const connectionId = await createConnection(a.base, workspace.token, 'Client A', firstKey)
  const seen = await call(b.base, 'GET', `/v1/connections/${connectionId}`, workspace.token)
  t.equal(seen.status, 200, 'B reads the connection A made')
  t.equal(seen.body.writeKeyHint, '…cdef')

  const first = await track(b.base, workspace.token, connectionId, fake)
  t.equal(first.answer.status, 200, 'an action through B succeeds', diag(b, first.answer))
  t.equal(first.answer.body.status, 'accepted')
  t.equal(first.authorization, basic(firstKey), 'and sends the Write Key given to A')

  // Each rotation through one replica is what the very next action through the other sends.
  for (let version = 1; version <= 4; version++) {
    const [rotator, sender] = version % 2 === 1 ? [a, b] : [b, a]
    const writeKey = `wk_replica_v${version}_${randomBytes(8).toString('hex')}`
    const rotated = await call(rotator.base, 'PUT', `/v1/connections/${connectionId}/write-key`, workspace.token, { writeKey })
    t.equal(rotated.status, 200, `rotation ${version} answered by ${rotator === a ? 'A' : 'B'}`)
    const next = await track(sender.base, workspace.token, connectionId, fake)
    t.equal(next.answer.status, 200, 'the action answered', diag(sender, next.answer))
    t.equal(next.authorization, basic(writeKey), `the next action, through ${sender === a ? 'A' : 'B'}, sends rotation ${version}`)
  }

  // A token revoked through A is refused by B on the very next request.
  const issued = await call(a.base, 'POST', `/v1/admin/workspaces/${workspace.id}/tokens`, ADMIN_TOKEN)
  t.equal(issued.status, 201)
  const second = issued.body as { id: string, token: string }
  t.equal((await call(b.base, 'GET', '/v1/connections', second.token)).status, 200, 'B accepts the token A issued')
  const revoked = await call(a.base, 'DELETE', `/v1/admin/workspaces/${workspace.id}/tokens/${second.id}`, ADMIN_TOKEN)
  t.equal(revoked.status, 204, 'A revokes it')
  const refused = await call(b.base, 'GET', '/v1/connections', second.token)
  t.equal(refused.status, 401, 'B refuses it on the next request')
  t.equal(refused.body.code, 'unauthorized')
  t.match(refused.headers.get('content-type'), /^application\/problem\+json/)
  const refusedAction = await track(b.base, second.token, connectionId, fake)
  t.equal(refusedAction.answer.status, 401, 'an action with it is refused too')
  t.equal(refusedAction.authorization, undefined, 'and nothing reaches Segment')
  t.equal((await call(b.base, 'GET', '/v1/connections', workspace.token)).status, 200, 'the workspace\'s other token still works on B')

  // A connection deleted through A is gone on B.
  t.equal((await call(a.base, 'DELETE', `/v1/connections/${connectionId}`, workspace.token)).status, 204)
  const gone = await track(b.base, workspace.token, connectionId, fake)
  t.equal(gone.answer.status, 404, 'a connection deleted through A is gone on B')
  t.equal(gone.answer.body.code, 'connection_not_found')

  // Connections for the rollout, made under the old key.
  const ids: string[] = []
  // Every Write Key ever set, by the Authorization header it makes: which connection and version.
  const keyInfo = new Map<string, { index: number, version: number }>()
  const keyFor = (index: number, version: number): string => {
    const writeKey = `wk_${index}_v${version}_${randomBytes(6).toString('hex')}`
    keyInfo.set(basic(writeKey), { index, version })
    return writeKey
  }
  const latest: string[] = []
  for (let i = 0; i < CONNECTIONS; i++) {
    latest[i] = keyFor(i, 0)
    ids.push(await createConnection(i % 2 === 0 ? a.base : b.base, workspace.token, `Client ${i}`, latest[i]!))
  }
  const kids = async (): Promise<Json> => {
    const rows = (await db.query<{ key_id: string, n: number }>('SELECT key_id, count(*)::int AS n FROM connections GROUP BY key_id ORDER BY key_id')).rows
    return Object.fromEntries(rows.map((r) => [r.key_id, r.n]))
  }
  t.same(await kids(), { old: CONNECTIONS }, 'every Write Key is sealed under "old"')

  // Phase 2: both replicas restart with ENCRYPTION_KEYS=new,old: they seal under "new" and still
  // open "old".
  await Promise.all([stopReplica(t, a), stopReplica(t, b)])
  const restarted = await startReplicas(t, 2, { ...common, ENCRYPTION_KEYS: `${nextKey},${oldKey}` }) as [Replica, Replica]
  a = restarted[0]
  b = restarted[1]

  // Versions per connection: `started` when a rotation is sent, `confirmed` once it answered.
  const started = latest.map(() => 0)
  const confirmed = latest.map(() => 0)
  const failures: string[] = []
  // An object, so the loops see the change made after they started.
  const traffic = { running: true }
  let actions = 0
  let rotations = 0
  let rewrapRunning = false
  let actionsDuringRewrap = 0
  let rotationsDuringRewrap = 0

  const actionLoop = async (replica: Replica, offset: number): Promise<void> => {
    for (let n = offset; traffic.running; n++) {
      const index = n % CONNECTIONS
      const floor = confirmed[index]!
      const { answer, authorization } = await track(replica.base, workspace.token, ids[index]!, fake)
      const ceiling = started[index]!
      actions++
      if (rewrapRunning) actionsDuringRewrap++
      if (answer.status !== 200) {
        failures.push(`action on ${index} via ${replica.base}: ${answer.status} ${JSON.stringify(answer.body)}`)
        continue
      }
      // The key sent must be one this connection had during the request: not older than the last
      // rotation answered before it began, not newer than the last one begun before it ended.
      const info = authorization === undefined ? undefined : keyInfo.get(authorization)
      if (info === undefined || info.index !== index || info.version < floor || info.version > ceiling) {
        failures.push(`action on ${index} sent ${JSON.stringify(info)}, expected version ${floor}..${ceiling}`)
      }
    }
  }
  const rotationLoop = async (): Promise<void> => {
    // Only even-numbered connections rotate: the odd ones keep the key sealed under "old", so
    // rewrap alone must carry them over.
    for (let n = 0; traffic.running; n++) {
      const index = (2 * n) % CONNECTIONS
      const version = started[index]! + 1
      const writeKey = keyFor(index, version)
      started[index] = version
      const answer = await call(a.base, 'PUT', `/v1/connections/${ids[index]!}/write-key`, workspace.token, { writeKey })
      rotations++
      if (rewrapRunning) rotationsDuringRewrap++
      if (answer.status !== 200) {
        failures.push(`rotation of ${index}: ${answer.status} ${JSON.stringify(answer.body)}`)
        continue
      }
      confirmed[index] = version
      latest[index] = writeKey
    }
  }
  const until = async (condition: () => boolean): Promise<void> => {
    const deadline = Date.now() + 60_000
    while (!condition()) {
      if (Date.now() > deadline) throw new Error('traffic did not progress')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  // Actions through A and B and rotations through A, all the while `rewrap` runs.
  const loops = Promise.all([actionLoop(a, 0), actionLoop(b, CONNECTIONS / 2), rotationLoop()])
  try {
    await until(() => actions >= 20 && rotations >= 5)
    rewrapRunning = true
    const rewrap = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'rewrap'], {
      cwd: root,
      env: serviceEnv({ ...common, ENCRYPTION_KEYS: `${nextKey},${oldKey}` })
    })
    const code = await rewrap.exited
    rewrapRunning = false
    t.equal(code, 0, 'rewrap exits 0')
    t.match(rewrap.stdout(), new RegExp(`^rewrap done: ${CONNECTIONS} connections scanned, \\d+ re-encrypted under key "new"\\n$`))
    t.comment(`${rewrap.stdout().trim()}; last progress line: ${rewrap.stderr().trim().split('\n').at(-1) ?? ''}`)
    // Some more traffic after it, on both replicas.
    const after = actions
    await until(() => actions >= after + 20)
  } finally {
    traffic.running = false
    await loops
  }

  t.same(failures, [], 'every action and rotation around the rewrap succeeded, each action sending a key its connection had',
    { logs: [a, b].map((r) => (r.proc.stdout() + r.proc.stderr()).slice(-3000)) })
  t.ok(actionsDuringRewrap > 0 && rotationsDuringRewrap > 0, `traffic ran during the rewrap (${actionsDuringRewrap} actions, ${rotationsDuringRewrap} rotations)`)
  t.comment(`${actions} actions and ${rotations} rotations in all`)
  t.same(await kids(), { new: CONNECTIONS }, 'every Write Key is now sealed under "new"')
  const canary = await db.query<{ key_id: string }>('SELECT key_id FROM meta')
  t.same(canary.rows.map((r) => r.key_id), ['new'], 'and so is the key ring canary')

  // Every connection resolves to its latest key: rotated ones the newest value.
  const check = async (replica: Replica, label: string): Promise<void> => {
    const wrong: string[] = []
    for (let i = 0; i < CONNECTIONS; i++) {
      const { answer, authorization } = await track(replica.base, workspace.token, ids[i]!, fake)
      if (answer.status !== 200 || authorization !== basic(latest[i]!)) wrong.push(`${i}: ${answer.status} ${JSON.stringify(answer.body)}`)
    }
    t.same(wrong, [], `${label}: every connection sends its latest Write Key`, { log: (replica.proc.stdout() + replica.proc.stderr()).slice(-3000) })
  }
  await check(b, 'B after the rewrap')
  t.ok(confirmed.filter((v) => v > 0).length > 0, 'some connections were rotated meanwhile')

  // Phase 3: with every row re-sealed, a replica that no longer holds the old key serves them all.
  const [c] = await Promise.all([
    startReplicas(t, 1, { ...common, ENCRYPTION_KEYS: nextKey }).then(([replica]) => replica!),
    stopReplica(t, a),
    stopReplica(t, b)
  ])
  await check(c, 'a replica with ENCRYPTION_KEYS=new only')
  await stopReplica(t, c)
})
