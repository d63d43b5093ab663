import t from 'tap'
import pino from 'pino'
import { redactPaths } from '../src/app.js'
import { DeferredChildLogger } from '../src/request-logger.js'
import { adminAuth, build, logCapture } from './helper.js'

type LogLine = Record<string, unknown>

function appLogger (level = 'info'): { logger: pino.Logger, lines: () => LogLine[] } {
  const capture = logCapture()
  const logger = pino({ level, redact: { paths: redactPaths, censor: '[redacted]' } }, capture.stream)
  return { logger, lines: () => capture.lines.map((line) => JSON.parse(line) as LogLine) }
}

// pino writes to a Writable asynchronously; one turn of the event loop lets the lines land.
const settled = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

t.test('the child is made on the first log call, with the bindings and the redaction of the parent', async (t) => {
  const { logger, lines } = appLogger()
  const log = new DeferredChildLogger(logger, { reqId: 'req-1' }, {})
  t.equal(log.made, false, 'nothing made before a call')
  t.equal(log.level, 'info', 'the level is the parent\'s')

  log.info({ writeKey: 'wk_SECRET_1', nested: { password: 'pw_SECRET_2' }, n: 7 }, 'hello %s', 'world')
  log.warn('plain message')
  await settled()
  t.equal(log.made, true)
  const [first, second] = lines()
  t.match(first, { reqId: 'req-1', level: 30, msg: 'hello world', n: 7, writeKey: '[redacted]', nested: { password: '[redacted]' } })
  t.match(second, { reqId: 'req-1', level: 40, msg: 'plain message' })
  t.notOk(JSON.stringify(lines()).includes('SECRET'), 'redacted values never printed')
})

t.test('levels: inherited, set by the child options, or changed later', async (t) => {
  const { logger, lines } = appLogger('info')
  const quiet = new DeferredChildLogger(logger, { reqId: 'req-q' }, { level: 'warn' })
  t.equal(quiet.level, 'warn', 'the options\' level before the child exists')
  quiet.info('dropped')
  quiet.error('kept')
  const loud = new DeferredChildLogger(logger, { reqId: 'req-l' }, {})
  loud.level = 'debug'
  t.equal(loud.made, true, 'setting the level makes the child')
  t.equal(loud.level, 'debug')
  loud.debug('debug kept')
  loud.trace('trace dropped')
  loud.silent('never written')
  await settled()
  t.same(lines().map((line) => [line.reqId, line.msg]), [['req-q', 'kept'], ['req-l', 'debug kept']])
  t.equal(logger.level, 'info', 'the parent keeps its level')
})

t.test('child() carries the request\'s bindings and its own', async (t) => {
  const { logger, lines } = appLogger()
  const log = new DeferredChildLogger(logger, { reqId: 'req-c' }, {})
  log.child({ plugin: 'x' }).info('from a grandchild')
  await settled()
  t.match(lines(), [{ reqId: 'req-c', plugin: 'x', msg: 'from a grandchild' }])
})

t.test('in the app: a request that goes well never makes its child; one that logs through request.log does, with its reqId', async (t) => {
  const { app, logs } = await build(t)
  const made: boolean[] = []
  app.addHook('onResponse', (request, _reply, done) => {
    made.push((request.log as DeferredChildLogger).made)
    done()
  })

  const ok = await app.inject({ method: 'POST', url: '/v1/admin/workspaces', headers: adminAuth, payload: { name: 'Lazy' } })
  t.equal(ok.statusCode, 201)
  t.same(made, [false], 'the answered request logged only its own line')

  // The router refuses bad percent-encoding before any hook; errors.ts logs that request's one
  // line through request.log.
  const bad = await app.inject({ method: 'GET', url: '/v1/connections/%E0%A4%A', headers: { 'x-request-id': 'req-bad-url-1' } })
  t.equal(bad.statusCode, 400)
  const line = logs.map((raw) => JSON.parse(raw) as LogLine).find((entry) => entry.route === 'unmatched')
  t.match(line, { reqId: 'req-bad-url-1', statusCode: 400, msg: 'request completed' })
})
