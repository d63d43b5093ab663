import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import type { Dispatcher } from 'undici'
import type { Config } from '../config.js'
import { enqueueAction, type Queued } from '../delivery/accept.js'
import { attemptTimeout, DeliveryWorker } from '../delivery/worker.js'
import type { ActionName } from '../segment/actions.js'
import type { UpstreamRequest } from '../segment/build.js'
import { SegmentClient } from '../segment/client.js'
import { userAgent } from '../version.js'

declare module 'fastify' {
  interface FastifyInstance {
    delivery: {
      /** Commits a built action as a queued delivery (see delivery/accept.ts for its errors). */
      accept: (input: { action: ActionName, upstream: UpstreamRequest, workspaceId: string, connectionId: string }) => Promise<Queued>
      worker: DeliveryWorker
    }
  }
}

export interface DeliveryPluginOptions {
  config: Config
  dispatcher?: (origin: string) => Dispatcher
}

const outcomeLabels = { delivered: 'delivered', retry: 'retried', failed: 'failed', isolate: 'split', release: 'released' } as const

/**
 * Queued delivery: the accept path and this process's delivery workers. Workers start when the app
 * is ready and, on close, stop claiming and finish or release what they hold within the grace.
 */
export default fp<DeliveryPluginOptions>(async (app, { config, dispatcher }) => {
  const { registry } = app.metrics
  const queue = app.store.queue
  // Read from the store on each scrape, so every replica reports the shared queue.
  new Gauge({ // eslint-disable-line no-new
    name: 'segment_forwarder_queue_events',
    help: 'Events of queued deliveries by state: queued (in_flight included), in_flight (held by a worker now), failed (dead letters)',
    labelNames: ['state'],
    registers: [registry],
    async collect () {
      const stats = await queue.stats(Date.now()).catch(() => undefined)
      if (stats === undefined) return
      for (const [state, n] of Object.entries(stats.events)) this.set({ state }, n)
      this.set({ state: 'in_flight' }, stats.inFlight)
      oldest.set(stats.oldestQueuedMs === null ? 0 : Math.max(0, (Date.now() - stats.oldestQueuedMs) / 1000))
    }
  })
  const oldest = new Gauge({
    name: 'segment_forwarder_queue_oldest_age_seconds',
    help: 'Age of the oldest queued (not yet delivered or failed) event; 0 when none',
    registers: [registry]
  })
  const outcomes = new Counter({
    name: 'segment_forwarder_deliveries_total',
    help: 'Queued deliveries by outcome of a worker\'s claim: delivered, retried, failed, split (refused in a joined request, resent alone), released (shutdown)',
    labelNames: ['outcome'],
    registers: [registry]
  })

  const timeoutMs = attemptTimeout(config)
  // One attempt per claim: a retry is a later claim, so the client never waits or retries itself.
  const client = new SegmentClient({
    maxAttempts: 1,
    attemptTimeoutMs: timeoutMs,
    deadlineMs: timeoutMs,
    userAgent,
    ...(dispatcher === undefined ? {} : { dispatcher })
  })
  const log = app.log.child({ component: 'delivery' })
  const worker = new DeliveryWorker({
    queue,
    ring: app.keyRing,
    client,
    oauthCredentials: (connection) => connection.oauth === undefined ? undefined : app.oauth.credentials(connection.oauth, connection.writeKey),
    config,
    log,
    concurrency: app.store.kind === 'postgres' ? 4 : 2,
    resolve: async (workspaceId, connectionId) => {
      const record = await app.store.getConnection(workspaceId, connectionId)
      return record === undefined ? undefined : app.connections.ready(record)
    },
    onOutcome: (outcome, n) => { outcomes.inc({ outcome: outcomeLabels[outcome] }, n) },
    onAttempt: (report) => {
      const status = String(report.upstreamStatus ?? 'error')
      app.metrics.upstreamAttempts.inc({ status })
      app.metrics.upstreamLatency.observe({ status }, report.durationMs / 1000)
      // One line per upstream request: counts and sizes only, never event data.
      log.info(report, 'delivery attempt')
    }
  })

  app.decorate('delivery', {
    accept: async ({ action, upstream, workspaceId, connectionId }) => {
      // A paced Write Key's new events wait out the pace too, so no claim has to pass over them.
      const pacedUntil = worker.pacedUntil(connectionId)
      const queued = await enqueueAction(queue, app.keyRing, {
        action, upstream, workspaceId, connectionId, maxAgeMs: config.delivery.maxAgeMs, queueMaxEvents: config.delivery.queueMaxEvents, maxEventBytes: config.segment.maxEventBytes, pacedUntil
      })
      if (pacedUntil === undefined) worker.wake()
      return queued
    },
    worker
  })

  app.addHook('onReady', async () => { worker.start() })
  // Registered after the store, so this runs before the store closes.
  app.addHook('onClose', async () => {
    await worker.stop(Math.max(0, Math.min(timeoutMs, config.shutdownGraceMs / 2)))
    await client.close()
  })
}, { name: 'delivery', dependencies: ['store', 'metrics', 'oauth'] })
