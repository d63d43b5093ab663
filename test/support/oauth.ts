// Shared set-up for the OAuth source tests: the fake Segment and a fake token server on loopback,
// an app pointed at both (with a clock the test moves), a workspace and one OAuth connection.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Config } from '../../src/config.js'
import type { FakeSegment } from '../fake-segment.js'
import { build, createConnection, createWorkspace, type TestContext, type TestWorkspace } from '../helper.js'
import { callAction, fakeSegment, type ActionName } from './actions.js'
import { ManualClock, oauthKeyPair, startFakeOAuth, type FakeOAuth, type OAuthKeyPair } from './fake-oauth.js'

export const OAUTH_WRITE_KEY = 'wk_oauth_9Vd2LqP7xZr3MtK1'
export const CLIENT_ID = 'app_2Xyz9OAuthClient'
export const KEY_ID = 'key_2XyzPublicKey1'

// Key generation takes a moment: one pair per test process is enough for most tests.
let sharedKeys: OAuthKeyPair | undefined
export function testKeys (): OAuthKeyPair {
  sharedKeys ??= oauthKeyPair()
  return sharedKeys
}

export interface OAuthSetup {
  app: FastifyInstance
  config: Config
  logs: string[]
  dir: string
  dbPath: string
  fake: FakeSegment
  oauth: FakeOAuth
  clock: ManualClock
  keys: OAuthKeyPair
  workspace: TestWorkspace
  connectionId: string
  send: (action: ActionName, payload: unknown, options?: { connectionId?: string, query?: string, headers?: Record<string, string> }) => Promise<LightMyRequestResponse>
}

export async function fakeOAuth (t: TestContext, clock: ManualClock): Promise<FakeOAuth> {
  const oauth = await startFakeOAuth({ now: clock.now })
  t.teardown(async () => { await oauth.close() })
  return oauth
}

/** The app pointed at a fake Segment (both regions) and a fake token server (US), with one OAuth connection. */
export async function setupOAuth (t: TestContext, env: Record<string, string> = {}, connection: Record<string, unknown> = {}): Promise<OAuthSetup> {
  const clock = new ManualClock()
  const fake = await fakeSegment(t)
  const oauth = await fakeOAuth(t, clock)
  const keys = testKeys()
  oauth.register({ clientId: CLIENT_ID, keyId: KEY_ID, publicKey: keys.publicKey })
  const built = await build(t, {
    SEGMENT_API_URL: fake.url,
    SEGMENT_EU_API_URL: fake.url,
    SEGMENT_OAUTH_URL: oauth.url,
    ...env
  }, { clock: clock.now })
  const workspace = await createWorkspace(built.app)
  const { id: connectionId } = await createConnection(built.app, workspace, {
    writeKey: OAUTH_WRITE_KEY,
    oauth: { clientId: CLIENT_ID, keyId: KEY_ID, privateKey: keys.privateKey },
    ...connection
  })
  const send: OAuthSetup['send'] = async (action, payload, options = {}) => {
    const { connectionId: id = connectionId, ...rest } = options
    return await callAction(built.app, workspace, id, action, payload, rest)
  }
  return { ...built, fake, oauth, clock, keys, workspace, connectionId, send }
}

export const bearer = (token: string | undefined): string => `Bearer ${String(token)}`
