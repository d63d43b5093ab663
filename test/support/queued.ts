// Set-up for the queued delivery tests, on either store: the app pointed at a fake Segment, with
// short leases and backoffs so retries happen within a test (never timed assertions: tests wait
// for states, with a generous bound that only turns a hang into a failure).
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { RecordedRequest } from '../fake-segment.js'
import type { TestContext } from '../helper.js'
import { freshPostgresUrl } from './postgres.js'
import { setupActions, type ActionsSetup } from './actions.js'

export type StoreKind = 'sqlite' | 'postgres'
export const STORES: StoreKind[] = ['sqlite', 'postgres']

export const QUEUED_ENV = {
  DELIVERY_LEASE_MS: '3000',
  DELIVERY_BACKOFF_MAX_MS: '40',
  SEGMENT_ATTEMPT_TIMEOUT_MS: '2000'
}

export const testKey = (): string => `k${randomBytes(3).toString('hex')}:${randomBytes(32).toString('base64')}`

/** The environment that selects the store: the per-test SQLite file (default) or a fresh PostgreSQL database. */
export async function storeEnv (t: TestContext & { teardown: (fn: () => unknown) => void }, kind: StoreKind): Promise<Record<string, string>> {
  if (kind === 'sqlite') return {}
  return { DATABASE_URL: await freshPostgresUrl(t), ENCRYPTION_KEYS: testKey() }
}

export async function setupQueued (t: TestContext, kind: StoreKind, env: Record<string, string> = {}): Promise<ActionsSetup> {
  return await setupActions(t, { ...QUEUED_ENV, ...await storeEnv(t, kind), ...env })
}

export const respondAsync = { prefer: 'respond-async' }

/** Polls `check` until it returns a value other than undefined; fails the test after `boundMs`. */
export async function waitFor<T> (what: string, check: () => Promise<T | undefined> | T | undefined, boundMs = 60_000): Promise<T> {
  const started = Date.now()
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() - started > boundMs) throw new Error(`gave up waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

export async function getDelivery (app: FastifyInstance, auth: { authorization: string }, connectionId: string, id: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'GET', url: `/v1/connections/${connectionId}/deliveries/${id}`, headers: auth })
}

/** Waits until the delivery is in `state`; returns its record. */
export async function waitForState (app: FastifyInstance, auth: { authorization: string }, connectionId: string, id: string, state: string): Promise<Record<string, unknown>> {
  return await waitFor(`delivery ${id} to be ${state}`, async () => {
    const body = (await getDelivery(app, auth, connectionId, id)).json<Record<string, unknown>>()
    return body.state === state ? body : undefined
  })
}

/** messageIds of every event in a batch request the fake answered 2xx (the fake's script decides). */
export function batchMessageIds (request: RecordedRequest): string[] {
  const body = request.body as { batch?: Array<{ messageId: string }> } | undefined
  return body?.batch?.map((item) => item.messageId) ?? []
}
