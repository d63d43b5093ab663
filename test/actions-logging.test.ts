import t, { type Test } from 'tap'
import { actionUrl, basicAuth, setupActions, type ActionsSetup } from './support/actions.js'

// Distinctive values planted in every place a secret or an event's content could leak from.
const writeKey = 'wk_SENTINEL_WRITEKEY_9c1f3e'
const planted = {
  property: 'SENTINEL-PROPERTY-VALUE-71d2',
  trait: 'sentinel-trait@example.com',
  context: 'SENTINEL-CONTEXT-VALUE-5e8a',
  integration: 'SENTINEL-INTEGRATION-4b7c',
  userId: 'SENTINEL-USER-ID-2f6d'
}

type LogLine = Record<string, unknown>

function parse (logs: string[]): LogLine[] {
  return logs.map((line) => JSON.parse(line) as LogLine)
}

function completedLines (logs: string[], from: number): LogLine[] {
  return parse(logs.slice(from)).filter((line) => line.msg === 'request completed')
}

/** No raw log line holds any planted value, secret or credential. */
function checkNothingLeaked (t: Test, setup: ActionsSetup): void {
  const forbidden: Record<string, string> = {
    'the Write Key': writeKey,
    'the Basic credential (base64)': basicAuth(writeKey).slice('Basic '.length),
    'the workspace token': setup.workspace.token,
    'the Authorization header': setup.workspace.auth.authorization,
    'the token in base64': Buffer.from(setup.workspace.token).toString('base64'),
    'a property value': planted.property,
    'a trait value': planted.trait,
    'a context value': planted.context,
    'an integrations value': planted.integration
  }
  const all = setup.logs.join('\n')
  for (const [what, value] of Object.entries(forbidden)) {
    t.notOk(all.includes(value), `no log line contains ${what}`)
  }
  t.notOk(/incoming request/.test(all), 'no Fastify "incoming request" line')
}

const track = {
  userId: planted.userId,
  event: 'Order Completed',
  properties: { secret: planted.property, nested: { deeper: planted.property } },
  context: { ip: planted.context, traits: { email: planted.trait } },
  integrations: { Webhooks: { note: planted.integration } }
}
const identify = { userId: 'u', traits: { email: planted.trait }, context: { note: planted.context } }

for (const level of ['info', 'trace'] as const) {
  t.test(`LOG_LEVEL=${level}: one line per action request with the outcome, and no secrets or event data`, async (t) => {
    const setup = await setupActions(t, { LOG_LEVEL: level, SEGMENT_MAX_ATTEMPTS: '3', SEGMENT_ATTEMPT_TIMEOUT_MS: '1000', SEGMENT_DEADLINE_MS: '8000' }, { writeKey })
    const { fake, send, workspace, connectionId } = setup

    // Accepted, first attempt.
    let mark = setup.logs.length
    const accepted = await send('track-event', track, { headers: { 'x-request-id': 'req-accepted-1' } })
    t.equal(accepted.statusCode, 200)
    let lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 1, 'one line')
    t.match(lines[0], {
      level: 30,
      reqId: 'req-accepted-1',
      workspaceId: workspace.id,
      connectionId,
      action: 'track-event',
      events: 1,
      bytes: accepted.json().bytes,
      upstreamStatus: 200,
      attempts: 1,
      statusCode: 200,
      durationMs: Number
    })

    // A batch, retried once.
    fake.respondWith([{ status: 503 }])
    mark = setup.logs.length
    const batch = await send('batch-send', { batch: [{ type: 'track', ...track }, { type: 'identify', ...identify }], context: { campaign: planted.context } })
    t.equal(batch.statusCode, 200)
    lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 1, 'one line, however many attempts')
    t.match(lines[0], { reqId: String, workspaceId: workspace.id, connectionId, action: 'batch-send', events: 2, bytes: batch.json().bytes, upstreamStatus: 200, attempts: 2, durationMs: Number })

    // Rejected by Segment, which echoes the key: the line carries the outcome only.
    fake.respondWith([{ status: 401, body: `invalid write key ${writeKey} ${basicAuth(writeKey)}` }])
    mark = setup.logs.length
    const rejected = await send('identify-user', identify)
    t.equal(rejected.statusCode, 502)
    lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 1)
    t.match(lines[0], { level: 50, workspaceId: workspace.id, connectionId, action: 'identify-user', events: 1, bytes: Number, upstreamStatus: 401, attempts: 1, code: 'segment_rejected', statusCode: 502 })

    // Every attempt fails.
    fake.respondWith([{ status: 500 }, { status: 500 }, { status: 500 }])
    mark = setup.logs.length
    t.equal((await send('group-user', { userId: 'u', groupId: 'g', traits: { name: planted.trait } })).statusCode, 503)
    lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 1)
    t.match(lines[0], { action: 'group-user', upstreamStatus: 500, attempts: 3, code: 'segment_unavailable', statusCode: 503 })

    // Refused before anything is sent: validation, size, dry run, unknown connection.
    mark = setup.logs.length
    t.equal((await send('track-event', { ...track, event: '', timestamp: planted.property })).statusCode, 400)
    t.equal((await send('page-view', { userId: 'u', properties: { big: planted.property.repeat(2000) } })).statusCode, 413)
    t.equal((await send('alias-user', { previousId: planted.userId, userId: 'u' }, { query: 'dryRun=true' })).statusCode, 200)
    t.equal((await send('track-event', track, { connectionId: 'con_0000000000000000000000' })).statusCode, 404)
    const raw = await setup.app.inject({ method: 'POST', url: actionUrl(connectionId, 'track-event'), headers: { ...workspace.auth, 'content-type': 'application/json' }, payload: `{"properties":{"secret":"${planted.property}"` })
    t.equal(raw.statusCode, 400)
    lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 5, 'one line each')
    t.match(lines[0], { action: 'track-event', connectionId, workspaceId: workspace.id, code: 'invalid_request', statusCode: 400 })
    t.match(lines[1], { action: 'page-view', code: 'payload_too_large', statusCode: 413 })
    t.match(lines[2], { action: 'alias-user', events: 1, bytes: Number, dryRun: true, statusCode: 200 })
    t.notOk('upstreamStatus' in lines[2]!, 'a dry run reached no upstream')
    t.match(lines[3], { action: 'track-event', code: 'connection_not_found', statusCode: 404 })
    t.match(lines[4], { action: 'track-event', code: 'invalid_request', statusCode: 400 })
    for (const line of lines) t.ok('reqId' in line && 'durationMs' in line, 'reqId and durationMs on every line')

    // No token at all.
    mark = setup.logs.length
    t.equal((await setup.app.inject({ method: 'POST', url: actionUrl(connectionId, 'track-event'), headers: { authorization: `Bearer ${workspace.token}x` }, payload: track })).statusCode, 401)
    lines = completedLines(setup.logs, mark)
    t.equal(lines.length, 1)
    t.match(lines[0], { code: 'unauthorized', statusCode: 401 })
    t.notOk('workspaceId' in lines[0]!, 'no workspace for an unauthenticated request')

    // Rotating the key logs neither key.
    const rotated = await setup.app.inject({ method: 'PUT', url: `/v1/connections/${connectionId}/write-key`, headers: workspace.auth, payload: { writeKey: `${writeKey}_NEW`, password: `${writeKey}_PW` } })
    t.equal(rotated.statusCode, 200)

    t.ok(fake.requests.length >= 5, 'the fake did receive the planted values, so they were there to leak')
    t.ok(fake.requests.some((request) => request.rawBody.includes(planted.property)))
    checkNothingLeaked(t, setup)
    t.notOk(setup.logs.some((line) => line.includes(planted.userId)), 'not even the userId')
  })
}
