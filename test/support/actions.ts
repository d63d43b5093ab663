// Shared set-up for the end-to-end action tests: a fake Segment on loopback, an app whose US base
// URL points at it, a workspace and one connection, and a one-line way to call an action.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Config } from '../../src/config.js'
import { startFakeSegment, type FakeSegment } from '../fake-segment.js'
import { build, createConnection, createWorkspace, type TestContext, type TestWorkspace } from '../helper.js'

export const WRITE_KEY = 'wk_e2e_7Qz9VfK2mXr4LpT8'
export const basicAuth = (writeKey: string): string => 'Basic ' + Buffer.from(writeKey + ':').toString('base64')
export const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
export const GENERATED_ID = /^sfw-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export type ActionName = 'track-event' | 'identify-user' | 'group-user' | 'page-view' | 'alias-user' | 'batch-send'

export interface ActionsSetup {
  app: FastifyInstance
  config: Config
  logs: string[]
  fake: FakeSegment
  workspace: TestWorkspace
  connectionId: string
  /** POSTs an action on the set-up connection (or `options.connectionId`) as the set-up workspace (or `options.workspace`). */
  send: (action: ActionName, payload: unknown, options?: SendOptions) => Promise<LightMyRequestResponse>
}

export interface SendOptions {
  connectionId?: string
  workspace?: TestWorkspace
  headers?: Record<string, string>
  query?: string
}

/** A started fake Segment, closed at teardown. */
export async function fakeSegment (t: TestContext): Promise<FakeSegment> {
  const fake = await startFakeSegment()
  t.teardown(async () => { await fake.close() })
  return fake
}

export function actionUrl (connectionId: string, action: ActionName, query?: string): string {
  return `/v1/connections/${connectionId}/actions/${action}${query === undefined ? '' : `?${query}`}`
}

/** Calls an action through inject(); objects go as JSON, strings as given. */
export async function callAction (app: FastifyInstance, workspace: TestWorkspace, connectionId: string, action: ActionName, payload: unknown, options: Omit<SendOptions, 'connectionId' | 'workspace'> = {}): Promise<LightMyRequestResponse> {
  return await app.inject({
    method: 'POST',
    url: actionUrl(connectionId, action, options.query),
    headers: { ...workspace.auth, 'content-type': 'application/json', ...options.headers },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload)
  })
}

/** The app, pointed at a fresh fake Segment (SEGMENT_API_URL), with a workspace and a connection. */
export async function setupActions (t: TestContext, env: Record<string, string> = {}, connection: Record<string, unknown> = {}): Promise<ActionsSetup> {
  const fake = await fakeSegment(t)
  // Load shedding off: a slow, shared machine must not turn these tests' answers into 503 overloaded.
  const { app, config, logs } = await build(t, { SEGMENT_API_URL: fake.url, PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0', ...env })
  const workspace = await createWorkspace(app)
  const { id: connectionId } = await createConnection(app, workspace, { writeKey: WRITE_KEY, ...connection })
  const send = async (action: ActionName, payload: unknown, options: SendOptions = {}): Promise<LightMyRequestResponse> => {
    const { connectionId: id = connectionId, workspace: as = workspace, ...rest } = options
    return await callAction(app, as, id, action, payload, rest)
  }
  return { app, config, logs, fake, workspace, connectionId, send }
}

/** A copy without `sentAt`, to compare bodies of different attempts. */
export function withoutSentAt (body: unknown): Record<string, unknown> {
  const { sentAt: _sentAt, ...rest } = body as Record<string, unknown>
  return rest
}

/** A string of `bytes` UTF-8 bytes mixing 1-, 2- and 4-byte characters, so characters != bytes. */
export function multiByteText (bytes: number): string {
  const pieces: string[] = []
  let left = bytes
  while (left >= 7) { pieces.push('🎉éa'); left -= 7 }
  while (left >= 2) { pieces.push('é'); left -= 2 }
  if (left === 1) pieces.push('a')
  const text = pieces.join('')
  if (Buffer.byteLength(text) !== bytes) throw new Error(`multiByteText(${bytes}) made ${Buffer.byteLength(text)} bytes`)
  return text
}
