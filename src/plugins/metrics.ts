import fp from 'fastify-plugin'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface Metrics {
  registry: Registry
  requests: Counter<'route' | 'action' | 'status'>
  requestDuration: Histogram<'route' | 'method' | 'status'>
  upstreamAttempts: Counter<'status'>
  retries: Counter
  upstreamLatency: Histogram<'status'>
  payloadBytes: Histogram<'action'>
  upstreamEvents: Histogram
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

// Labels are bounded on purpose: route patterns (not URLs), the six action names, and status
// codes. No workspace or connection label, so series cannot grow with tenants.
export default fp(async (app) => {
  const registry = new Registry()
  // No prefix: process_* and nodejs_* are the names stock dashboards and alerts look for.
  collectDefaultMetrics({ register: registry })
  const metrics: Metrics = {
    registry,
    requests: new Counter({
      name: 'segment_forwarder_requests_total',
      help: 'HTTP requests answered, by route pattern, action and status',
      labelNames: ['route', 'action', 'status'],
      registers: [registry]
    }),
    requestDuration: new Histogram({
      name: 'segment_forwarder_http_request_duration_seconds',
      help: 'Time from a request\'s arrival to its answer, by route pattern, method and status',
      labelNames: ['route', 'method', 'status'],
      // Up to the 15 s default deadline and past it, where a request waiting on Segment ends.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
      registers: [registry]
    }),
    upstreamAttempts: new Counter({
      name: 'segment_forwarder_upstream_attempts_total',
      help: 'Attempts to call Segment, by upstream status (or error / timeout)',
      labelNames: ['status'],
      registers: [registry]
    }),
    retries: new Counter({
      name: 'segment_forwarder_upstream_retries_total',
      help: 'Attempts to call Segment that were retries',
      registers: [registry]
    }),
    upstreamLatency: new Histogram({
      name: 'segment_forwarder_upstream_latency_seconds',
      help: 'Duration of each attempt to call Segment',
      labelNames: ['status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry]
    }),
    payloadBytes: new Histogram({
      name: 'segment_forwarder_payload_bytes',
      help: 'UTF-8 bytes of the bodies built for Segment, by action',
      labelNames: ['action'],
      buckets: [256, 1024, 4096, 16384, 32000, 65536, 131072, 262144, 500000],
      registers: [registry]
    }),
    upstreamEvents: new Histogram({
      name: 'segment_forwarder_upstream_request_events',
      help: 'Events carried by each request to Segment (1 for a call sent alone; more when concurrent calls were joined)',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2500],
      registers: [registry]
    })
  }
  app.decorate('metrics', metrics)

  app.addHook('onResponse', (request, reply, done) => {
    const status = String(reply.statusCode)
    metrics.requests.inc({ route: request.logFields.route, action: request.logFields.action ?? '', status })
    metrics.requestDuration.observe({ route: request.logFields.route, method: request.method, status }, reply.elapsedTime / 1000)
    done()
  })

  app.get('/metrics', {
    schema: {
      tags: ['operations'],
      summary: 'Prometheus metrics',
      operationId: 'metrics',
      security: [],
      produces: ['text/plain'],
      response: {
        200: {
          type: 'string',
          description: 'Prometheus text exposition format',
          examples: ['segment_forwarder_requests_total{route="/v1/connections/:connectionId/actions/track-event",action="track-event",status="200"} 42']
        }
      }
    }
  }, async (_request, reply) => {
    reply.type(registry.contentType)
    return await registry.metrics()
  })
}, { name: 'metrics', dependencies: ['request-log'] })
