import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import rateLimit from '@fastify/rate-limit'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'

const OVERLOADED_RETRY_AFTER_S = 5

/**
 * Load shedding: past the event-loop delay, heap or RSS thresholds, answer 503 overloaded with
 * Retry-After instead of queueing work the process cannot finish. Registered around the API
 * routes only, so health probes still answer under load.
 */
export const loadShedding = fp<{ config: Config }>(async (app, { config }) => {
  const { maxEventLoopDelayMs, maxHeapUsedBytes, maxRssBytes } = config.pressure
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    maxRssBytes,
    retryAfter: OVERLOADED_RETRY_AFTER_S,
    pressureHandler: async (_request, _reply, type) => {
      throw new AppError('overloaded', `the service is shedding load (${type}); retry later`, {}, OVERLOADED_RETRY_AFTER_S)
    }
  })
}, { name: 'load-shedding' })

/**
 * A request budget per workspace (after authentication, so the key is the tenant, not an IP).
 * Counted before the body is read or validated (preParsing), so invalid requests spend it too.
 * Counted per replica, in memory: with N replicas a workspace gets up to N × RATE_LIMIT_MAX.
 */
export const workspaceRateLimit = fp<{ config: Config }>(async (app, { config }) => {
  if (config.rateLimit.max === 0) return
  await app.register(rateLimit, {
    max: config.rateLimit.max,
    timeWindow: config.rateLimit.windowMs,
    hook: 'preParsing',
    keyGenerator: (request) => request.workspaceId,
    // Bounded memory however many workspaces call.
    cache: 10_000,
    errorResponseBuilder: (_request, context) =>
      new AppError('rate_limited', `this workspace's budget of ${context.max} requests per ${context.after} is spent`, {}, Math.max(1, Math.ceil(context.ttl / 1000)))
  })
}, { name: 'workspace-rate-limit', dependencies: ['auth'] })
