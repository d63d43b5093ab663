import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import type { Config } from '../config.js'
import { SegmentClient } from '../segment/client.js'
import { Coalescer } from '../segment/coalesce.js'
import { userAgent } from '../version.js'

declare module 'fastify' {
  interface FastifyInstance {
    segment: SegmentClient
    /** Sends actions through their connection's lane (joined with concurrent ones when COALESCE=on). */
    coalescer: Coalescer
  }
}

export interface SegmentPluginOptions {
  config: Config
  /** Tests may inject a dispatcher per origin (undici MockAgent, or anything else). */
  dispatcher?: (origin: string) => Dispatcher
}

/** The upstream client: one keep-alive pool per Segment origin, closed with the app. */
export default fp<SegmentPluginOptions>(async (app, { config, dispatcher }) => {
  const client = new SegmentClient({
    maxAttempts: config.segment.maxAttempts,
    attemptTimeoutMs: config.segment.attemptTimeoutMs,
    deadlineMs: config.segment.deadlineMs,
    userAgent,
    ...(dispatcher === undefined ? {} : { dispatcher })
  })
  app.decorate('segment', client)
  // Metrics count upstream requests and attempts here, once each, however many callers share them.
  const { metrics } = app
  app.decorate('coalescer', new Coalescer(client, {
    enabled: config.segment.coalesce,
    deadlineMs: config.segment.deadlineMs,
    maxBatchBytes: config.segment.maxBatchBytes,
    maxWaitingEvents: config.segment.maxWaitingEvents,
    onRequest: (events) => { metrics.upstreamEvents.observe(events) },
    onAttempt: ({ attempt, status, durationMs }) => {
      metrics.upstreamAttempts.inc({ status: String(status) })
      metrics.upstreamLatency.observe({ status: String(status) }, durationMs / 1000)
      if (attempt > 1) metrics.retries.inc()
    }
  }))
  // onClose runs after in-flight requests finished, so no forward loses its pool mid-flight.
  app.addHook('onClose', async () => { await client.close() })
}, { name: 'segment', dependencies: ['metrics'] })
