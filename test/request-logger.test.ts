import t from 'tap'
import { build } from './helper.js'

type LogLine = Record<string, unknown>

t.test('a line logged through request.log carries the request\'s reqId', async (t) => {
  const { app, logs } = await build(t)
  // The router refuses bad percent-encoding before any hook; errors.ts logs that request's one
  // line through request.log.
  const bad = await app.inject({ method: 'GET', url: '/v1/connections/%E0%A4%A', headers: { 'x-request-id': 'req-bad-url-1' } })
  t.equal(bad.statusCode, 400)
  const line = logs.map((raw) => JSON.parse(raw) as LogLine).find((entry) => entry.route === 'unmatched')
  t.match(line, { reqId: 'req-bad-url-1', statusCode: 400, msg: 'request completed' })
})
