// Why Segment could not be reached reaches the log line, not only the caller's problem document.
import t from 'tap'
import { createConnection, createWorkspace, build } from './helper.js'
import { callAction, setupActions } from './support/actions.js'

type LogLine = Record<string, unknown>
const lastCompleted = (logs: string[]): LogLine | undefined =>
  logs.map((line) => JSON.parse(line) as LogLine).filter((line) => line.msg === 'request completed').at(-1)

const env = { SEGMENT_MAX_ATTEMPTS: '2', SEGMENT_ATTEMPT_TIMEOUT_MS: '300', SEGMENT_DEADLINE_MS: '5000' }
const track = { userId: 'u1', event: 'E' }

t.test('a reset connection: the code is in the log line', async (t) => {
  const { fake, send, logs } = await setupActions(t, env)
  fake.respondWith([{ reset: true }, { reset: true }])
  const answer = await send('track-event', track)
  t.equal(answer.statusCode, 503)
  t.match(lastCompleted(logs), { statusCode: 503, code: 'segment_unavailable', attempts: 2, upstreamError: /^(ECONNRESET|UND_ERR_SOCKET)$/ })
  t.match(answer.json(), { detail: new RegExp(String(lastCompleted(logs)?.upstreamError)) }, 'the same reason as the caller was told')
})

t.test('no answer in time: timeout in the log line', async (t) => {
  const { fake, send, logs } = await setupActions(t, env)
  fake.respondWith([{ hang: true }, { hang: true }])
  const answer = await send('track-event', track)
  t.equal(answer.statusCode, 503)
  t.match(lastCompleted(logs), { code: 'segment_unavailable', upstreamError: 'timeout' })
})

t.test('a host that does not resolve: the DNS error in the log line', async (t) => {
  const { app, logs } = await build(t, { ...env, SEGMENT_API_URL: 'http://segment-forwarder-test.invalid' })
  const workspace = await createWorkspace(app)
  const connection = await createConnection(app, workspace)
  const answer = await callAction(app, workspace, connection.id, 'track-event', track)
  t.equal(answer.statusCode, 503)
  t.match(lastCompleted(logs), { code: 'segment_unavailable', upstreamError: /^(ENOTFOUND|EAI_AGAIN)$/ })
})

t.test('a failed attempt then an answer: the line carries no stale reason', async (t) => {
  const { fake, send, logs } = await setupActions(t, env)
  fake.respondWith([{ reset: true }, {}])
  const answer = await send('track-event', track)
  t.equal(answer.statusCode, 200)
  const line = lastCompleted(logs)
  t.match(line, { statusCode: 200, attempts: 2, upstreamStatus: 200 })
  t.notOk(line !== undefined && 'upstreamError' in line, 'no upstreamError')
})
