import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import type { Config } from '../config.js'
import { SegmentClient } from '../segment/client.js'
import { userAgent } from '../version.js'

declare module 'fastify' {
  interface FastifyInstance {
    segment: SegmentClient
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
  // onClose runs after in-flight requests finished, so no forward loses its pool mid-flight.
  app.addHook('onClose', async () => { await client.close() })
}, { name: 'segment' })
