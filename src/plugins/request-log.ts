import fp from 'fastify-plugin'

/** What the one log line of a request says beyond method, route, status and duration. */
export interface RequestLogFields {
  /** The route's pattern, or 'unmatched'; read once, as Fastify builds request.routeOptions anew on each read. */
  route: string
  connectionId?: string
  action?: string
  events?: number
  bytes?: number
  upstreamStatus?: number
  /** Why the last attempt upstream got no answer (ECONNRESET, ENOTFOUND, timeout, …). */
  upstreamError?: string
  attempts?: number
  /** Events in the upstream request that carried this action (1 alone; more when joined). */
  upstreamEvents?: number
  code?: string
  dryRun?: boolean
  /** Answered from a remembered Idempotency-Key: nothing was sent. */
  idempotentReplay?: boolean
}

declare module 'fastify' {
  interface FastifyRequest {
    logFields: RequestLogFields
  }
}

// Replaces Fastify's two request lines (disableRequestLogging) with one line per request that
// names the tenant and the outcome. Bodies, headers and keys are never part of it.
export default fp(async (app) => {
  // The line is made here of the fields above only (ids, counts, codes; never a body, header or
  // key), so it is written by a child without the path redaction every other log call gets: the
  // redaction's wildcard paths cost more than the rest of the line (measured alone: 16.5 against 5.5 µs a line).
  const lines = app.log.child({}, { redact: [] })
  app.decorateRequest('logFields', null as unknown as RequestLogFields)
  // Both hooks are synchronous, in callback style: no promise per request for either.
  app.addHook('onRequest', (request, reply, done) => {
    request.logFields = { route: request.routeOptions.url ?? 'unmatched' }
    // Set first, so every answer carries it, errors included.
    reply.header('x-request-id', request.id)
    done()
  })
  app.addHook('onResponse', (request, reply, done) => {
    const statusCode = reply.statusCode
    const level = statusCode >= 500 ? 'error' : 'info'
    const fields = request.logFields
    // Every key every time (pino skips the undefined ones): one object shape for all lines.
    lines[level]({
      reqId: request.id,
      method: request.method,
      route: fields.route,
      statusCode,
      workspaceId: request.workspaceId === '' ? undefined : request.workspaceId,
      connectionId: fields.connectionId,
      action: fields.action,
      events: fields.events,
      bytes: fields.bytes,
      upstreamStatus: fields.upstreamStatus,
      upstreamError: fields.upstreamError,
      attempts: fields.attempts,
      upstreamEvents: fields.upstreamEvents,
      code: fields.code,
      dryRun: fields.dryRun,
      idempotentReplay: fields.idempotentReplay,
      durationMs: Math.round(reply.elapsedTime * 100) / 100
    }, 'request completed')
    done()
  })
}, { name: 'request-log' })
