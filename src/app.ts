import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { DestinationStream } from 'pino'
import type { Config } from './config.js'
import errors, { frameworkErrors } from './plugins/errors.js'
import requestLog from './plugins/request-log.js'
import store from './plugins/store.js'
import openapi from './plugins/openapi.js'
import auth from './plugins/auth.js'
import ops from './routes/ops.js'
import admin from './routes/admin.js'
import connections from './routes/connections.js'
import actionRoutes from './routes/actions.js'
import metrics from './plugins/metrics.js'
import { loadShedding, workspaceRateLimit } from './plugins/limits.js'
import segment from './plugins/segment.js'
import oauth from './plugins/oauth.js'
import delivery from './plugins/delivery.js'
import deliveries from './routes/deliveries.js'
import { useFastDateTime } from './segment/date-time.js'
import { deferredChildLogger } from './request-logger.js'
import type { Dispatcher } from 'undici'

export interface AppDeps {
  /** Where log lines go (tests capture them); stdout by default. */
  logStream?: DestinationStream
  /** The dispatcher for each upstream origin; a keep-alive undici Pool by default. */
  dispatcher?: (origin: string) => Dispatcher
  /** OAuth sources: wall-clock milliseconds for token expiry and assertion times (tests move their own clock). */
  clock?: () => number
}

// Redaction lives here, not at call sites: whatever object a log call is given, these never print.
export const redactPaths = [
  'req.headers.authorization', 'headers.authorization', 'authorization', '*.authorization',
  'writeKey', '*.writeKey', 'password', '*.password', 'token', '*.token', 'adminToken', '*.adminToken',
  'properties', '*.properties', 'traits', '*.traits', 'body', '*.body',
  // OAuth sources
  'privateKey', '*.privateKey', 'accessToken', '*.accessToken', 'access_token', '*.access_token',
  'assertion', '*.assertion', 'client_assertion', '*.client_assertion'
]

/** How Fastify builds the ajv that validates every request part (exported for the benchmark). */
export const ajvOptions = {
  customOptions: { allErrors: true, coerceTypes: false, removeAdditional: false, useDefaults: true, discriminator: true },
  onCreate: useFastDateTime
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/

/** Builds the whole service, ready for inject() or listen(); never listens itself. */
export async function buildApp (config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: config.logLevel,
      redact: { paths: redactPaths, censor: '[redacted]' },
      ...(deps.logStream === undefined ? {} : { stream: deps.logStream })
    },
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: deferredChildLogger,
    // Keep a caller's request id when it is plainly an id (so it cannot inject into logs).
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    bodyLimit: 64 * 1024,
    // URLs the router refuses before any hook (bad percent-encoding) answer as problem documents.
    frameworkErrors,
    // Idle keep-alive sockets outlive a typical load balancer's 60 s idle timeout, so the balancer
    // closes first and never sends on a socket we are closing. A request may take the upstream
    // deadline plus slack, never forever.
    keepAliveTimeout: 72_000,
    requestTimeout: config.segment.deadlineMs + 30_000,
    ajv: ajvOptions
  }).withTypeProvider<TypeBoxTypeProvider>()

  // The API takes JSON only; without this, Fastify's text/plain parser would hand schemas a string
  // and callers would get a misleading 400 instead of 415.
  app.removeContentTypeParser('text/plain')

  for (const warning of config.warnings) app.log.warn(warning)

  // Above keepAliveTimeout, as Node requires for headers on a reused socket.
  app.server.headersTimeout = 75_000

  await app.register(errors)
  await app.register(openapi)
  await app.register(requestLog)
  await app.register(store, { config })
  await app.register(auth, { config })
  await app.register(metrics)
  await app.register(segment, { config, ...(deps.dispatcher === undefined ? {} : { dispatcher: deps.dispatcher }) })
  await app.register(oauth, { config, ...(deps.dispatcher === undefined ? {} : { dispatcher: deps.dispatcher }), ...(deps.clock === undefined ? {} : { clock: deps.clock }) })
  await app.register(delivery, { config, ...(deps.dispatcher === undefined ? {} : { dispatcher: deps.dispatcher }) })

  // Probes stay outside load shedding and budgets, so they answer under load.
  await app.register(ops)
  await app.register(async (api) => {
    await api.register(loadShedding, { config })
    await api.register(admin)
    await api.register(async (tenant) => {
      await tenant.register(workspaceRateLimit, { config })
      await tenant.register(connections)
      await tenant.register(actionRoutes, { config })
      await tenant.register(deliveries, { config })
    })
  })

  return app
}
