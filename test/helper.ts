import { Writable } from 'node:stream'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp, type AppDeps } from '../src/app.js'
import { loadConfig, type Config } from '../src/config.js'
import type { ConnectionService, ResolvedConnection } from '../src/connections.js'

export const ADMIN_TOKEN = 'admin-test-token-4f9c2e7a1b-0d8e6c3f5a92'
export const adminAuth = { authorization: `Bearer ${ADMIN_TOKEN}` }

/** The subset of tap's Test that the helpers use. */
export interface TestContext {
  testdir: () => string
  teardown: (fn: () => unknown) => void
}

export interface TestApp {
  app: FastifyInstance
  config: Config
  /** Every log line the app wrote, raw. */
  logs: string[]
  /** The folder holding this app's SQLite file (and generated key file). */
  dir: string
  dbPath: string
}

/** Captures log lines as the raw strings pino writes, so tests can search them byte for byte. */
export function logCapture (): { stream: Writable, lines: string[] } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''))
      callback()
    }
  })
  return { stream, lines }
}

/** A fresh app on its own SQLite file in a per-test folder; closed at teardown. */
export async function build (t: TestContext, env: Record<string, string> = {}, deps: AppDeps = {}): Promise<TestApp> {
  const dir = t.testdir()
  const dbPath = join(dir, 'segment-forwarder.db')
  // No load shedding and no request budget unless a test asks: the shared test machine is noisy,
  // and some suites send thousands of requests.
  const config = loadConfig({
    DATABASE_URL: `sqlite:${dbPath}`,
    ADMIN_TOKEN,
    LOG_LEVEL: 'info',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
    RATE_LIMIT_MAX: '0',
    ...env
  })
  const capture = logCapture()
  const app = await buildApp(config, { logStream: capture.stream, ...deps })
  t.teardown(async () => { await app.close() })
  return { app, config, logs: capture.lines, dir, dbPath }
}

export interface TestWorkspace {
  id: string
  token: string
  auth: { authorization: string }
}

export async function createWorkspace (app: FastifyInstance, name = 'Acme Agency'): Promise<TestWorkspace> {
  const response = await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: adminAuth, payload: { name } })
  if (response.statusCode !== 201) throw new Error(`workspace create failed: ${response.statusCode} ${response.body}`)
  const body = response.json<{ id: string, token: string }>()
  return { id: body.id, token: body.token, auth: { authorization: `Bearer ${body.token}` } }
}

export async function createConnection (app: FastifyInstance, workspace: TestWorkspace, body: Record<string, unknown> = {}): Promise<{ id: string } & Record<string, unknown>> {
  const response = await app.inject({
    method: 'POST',
    url: '/v1/connections',
    headers: workspace.auth,
    payload: { name: 'Client A', writeKey: 'wk_test_0123456789abcdef', ...body }
  })
  if (response.statusCode !== 201) throw new Error(`connection create failed: ${response.statusCode} ${response.body}`)
  return response.json()
}

/** A connection as an action resolves it: the row read now, its Write Key opened, its endpoint checked. */
export async function resolveConnection (app: FastifyInstance, workspaceId: string, id: string, connections: ConnectionService = app.connections): Promise<ResolvedConnection> {
  return connections.ready(await app.store.getConnection(workspaceId, id))
}
