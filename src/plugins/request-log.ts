import fp from 'fastify-plugin'

/** What the one log line of a request says beyond method, route, status and duration. */
export interface RequestLogFields {
  connectionId?: string
  action?: string
  events?: number
  bytes?: number
  upstreamStatus?: number
  attempts?: number
  code?: string
  dryRun?: boolean
}

declare module 'fastify' {
  interface FastifyRequest {
    logFields: RequestLogFields
  }
}

// Replaces Fastify's two request lines (disableRequestLogging) with one line per request that
// names the tenant and the outcome. Bodies, headers and keys are never part of it.
export default fp(async (app) => {
  app.decorateRequest('logFields', null as unknown as RequestLogFields)
  app.addHook('onRequest', async (request) => {
    request.logFields = {}
  })
  app.addHook('onResponse', async (request, reply) => {
    const statusCode = reply.statusCode
    const level = statusCode >= 500 ? 'error' : 'info'
    request.log[level]({
      method: request.method,
      route: request.routeOptions.url ?? 'unmatched',
      statusCode,
      workspaceId: request.workspaceId === '' ? undefined : request.workspaceId,
      ...request.logFields,
      durationMs: Math.round(reply.elapsedTime * 100) / 100
    }, 'request completed')
  })
}, { name: 'request-log' })
