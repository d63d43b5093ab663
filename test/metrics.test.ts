import t from 'tap'
import { build, createConnection, createWorkspace } from './helper.js'
import { startFakeSegment } from './fake-segment.js'

function sample (text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('metrics change as actions are served', async (t) => {
  const fake = await startFakeSegment()
  t.teardown(async () => { await fake.close() })
  const { app } = await build(t, { SEGMENT_API_URL: fake.url, SEGMENT_ATTEMPT_TIMEOUT_MS: '2000' })
  const ws = await createWorkspace(app)
  const connection = await createConnection(app, ws)
  const url = `/v1/connections/${connection.id}/actions/track-event`
  const before = (await app.inject({ method: 'GET', url: '/metrics' })).body
  const route = 'route="/v1/connections/:connectionId/actions/track-event",action="track-event"'
  t.equal(sample(before, 'segment_forwarder_requests_total', `${route},status="200"`), 0)

  fake.respondWith([{ status: 503 }])
  const ok = await app.inject({ method: 'POST', url, headers: ws.auth, payload: { userId: 'u1', event: 'Signed Up' } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.json().attempts, 2)
  const bad = await app.inject({ method: 'POST', url, headers: ws.auth, payload: { userId: 'u1' } })
  t.equal(bad.statusCode, 400)

  const response = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /^text\/plain/)
  const after = response.body
  t.equal(sample(after, 'segment_forwarder_requests_total', `${route},status="200"`), 1)
  t.equal(sample(after, 'segment_forwarder_requests_total', `${route},status="400"`), 1)
  t.equal(sample(after, 'segment_forwarder_upstream_attempts_total', 'status="503"'), 1)
  t.equal(sample(after, 'segment_forwarder_upstream_attempts_total', 'status="200"'), 1)
  t.equal(sample(after, 'segment_forwarder_upstream_retries_total', ''), 1)
  t.equal(sample(after, 'segment_forwarder_upstream_latency_seconds_count', 'status="200"'), 1)
  t.equal(sample(after, 'segment_forwarder_payload_bytes_count', 'action="track-event"'), 1)
  t.equal(sample(after, 'segment_forwarder_http_request_duration_seconds_count', 'route="/v1/connections/:connectionId/actions/track-event",method="POST",status="200"'), 1, 'the request duration histogram')
  t.ok(sample(after, 'segment_forwarder_http_request_duration_seconds_sum', 'route="/v1/connections/:connectionId/actions/track-event",method="POST",status="200"') > 0)
  t.equal(sample(after, 'segment_forwarder_http_request_duration_seconds_bucket', 'le="+Inf",route="/v1/connections/:connectionId/actions/track-event",method="POST",status="400"'), 1)
  // The standard process and Node.js metrics under their conventional names.
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
    t.match(after, new RegExp(`^${name}[ {]`, 'm'), name)
  }
  t.notMatch(after, /segment_forwarder_process_|segment_forwarder_nodejs_/, 'no prefixed copies')
  t.notMatch(after, new RegExp(ws.id), 'no per-workspace labels')
  t.notMatch(after, new RegExp(connection.id), 'no per-connection labels')
})
