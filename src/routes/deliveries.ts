import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyRequest } from 'fastify'
import type { Config } from '../config.js'
import { deliveryStates, type DeliveryRecord } from '../delivery/queue-store.js'
import { AppError, problemResponses } from '../errors.js'
import { StringEnum } from '../schema-helpers.js'
import type { ConnectionRecord } from '../store/store.js'
import { ConnectionIdParams } from './connections.js'

const security = [{ workspaceToken: [] }]
const Timestamp = Type.String({ format: 'date-time' })

export const Delivery = Type.Object({
  id: Type.String({ examples: ['dlv_2Vn8QpX4cLmT7rB1kZs9aD'] }),
  state: StringEnum(deliveryStates, { description: 'queued (waiting or being sent), delivered (Segment took it; its events are deleted), failed (a dead letter: refused, or past DELIVERY_MAX_AGE_MS)' }),
  action: Type.String({ description: 'The action that queued it' }),
  events: Type.Integer({ minimum: 1 }),
  messageIds: Type.Array(Type.String(), { description: 'The messageId of each event, in order; the same on every attempt' }),
  bytes: Type.Integer({ description: 'UTF-8 bytes of the body as a sync call would have sent it' }),
  attempts: Type.Integer({ description: 'Upstream attempts so far' }),
  createdAt: Timestamp,
  nextAttemptAt: Type.Optional(Type.String({ format: 'date-time', description: 'Queued: when it is due, or when the lease of the worker sending it runs out' })),
  deliveredAt: Type.Optional(Timestamp),
  upstreamStatus: Type.Optional(Type.Integer({ description: 'The last status Segment answered' })),
  error: Type.Optional(Type.String({ description: 'Why the last attempt failed (never event data)' }))
}, {
  title: 'Delivery',
  description: 'A queued delivery\'s record. Never an event\'s content.',
  examples: [{ id: 'dlv_2Vn8QpX4cLmT7rB1kZs9aD', state: 'failed', action: 'track-event', events: 1, messageIds: ['sfw-6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d'], bytes: 412, attempts: 1, createdAt: '2026-11-28T12:00:00.000Z', upstreamStatus: 400, error: 'Segment answered 400' }]
})
export type DeliveryView = Static<typeof Delivery>

export const Queued = Type.Object({
  status: Type.Literal('queued'),
  action: Type.String({ description: 'The action queued.' }),
  messageId: Type.Optional(Type.String({ description: 'Single calls: the messageId of the event.' })),
  messageIds: Type.Optional(Type.Array(Type.String(), { description: 'batch-send: the messageId of each item, in order.' })),
  count: Type.Optional(Type.Integer({ minimum: 1, description: 'batch-send: the number of items queued.' })),
  bytes: Type.Integer({ description: 'UTF-8 bytes of the body as a sync call would send it' }),
  deliveryId: Type.String({ description: 'Follow it at Location: /v1/connections/{connectionId}/deliveries/{deliveryId}' })
}, {
  title: 'Queued',
  description: 'Prefer: respond-async: the events are committed to the store (encrypted) and will be delivered at least once, with these messageIds, by a worker; see the Delivery at Location.',
  examples: [{ status: 'queued', action: 'track-event', messageId: 'sfw-6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d', bytes: 412, deliveryId: 'dlv_2Vn8QpX4cLmT7rB1kZs9aD' }]
})

const DeliveryParams = Type.Object({
  connectionId: ConnectionIdParams.properties.connectionId,
  deliveryId: Type.String({ minLength: 1, maxLength: 64, examples: ['dlv_2Vn8QpX4cLmT7rB1kZs9aD'] })
})

const ListQuery = Type.Object({
  state: Type.Optional(StringEnum(deliveryStates, { description: 'Only deliveries in this state; every state when left out' })),
  limit: Type.Optional(Type.String({ pattern: '^([1-9][0-9]?|[1-4][0-9][0-9]|500)$', description: 'Deliveries per page, 1 to 500; 50 when left out', examples: ['50'] })),
  cursor: Type.Optional(Type.String({ maxLength: 512, description: 'nextCursor of the previous page' }))
}, { additionalProperties: false })

export function toDeliveryView (record: DeliveryRecord): DeliveryView {
  return {
    id: record.id,
    state: record.state,
    action: record.action,
    events: record.events,
    messageIds: record.messageIds,
    bytes: record.bytes,
    attempts: record.attempts,
    createdAt: record.createdAt,
    ...(record.nextAttemptAt === null ? {} : { nextAttemptAt: new Date(Math.max(record.nextAttemptAt, Date.parse(record.createdAt))).toISOString() }),
    ...(record.deliveredAt === null ? {} : { deliveredAt: record.deliveredAt }),
    ...(record.upstreamStatus === null ? {} : { upstreamStatus: record.upstreamStatus }),
    ...(record.error === null ? {} : { error: record.error })
  }
}

function encodeCursor (record: DeliveryRecord): string {
  return Buffer.from(JSON.stringify([record.createdAt, record.id])).toString('base64url')
}

function decodeCursor (cursor: string): { createdAt: string, id: string } {
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'string') {
      return { createdAt: value[0], id: value[1] }
    }
  } catch {}
  throw new AppError('invalid_request', 'cursor is not one this service gave out', { errors: [{ path: '/cursor', message: 'must be a nextCursor from a previous page' }] })
}

function deliveryNotFound (): AppError {
  return new AppError('delivery_not_found', 'no such delivery on this connection')
}

/** The connection the request names, of the token's workspace; 404 connection_not_found otherwise. */
function connectionOf (request: FastifyRequest): ConnectionRecord {
  if (request.connection === null) throw new AppError('connection_not_found', 'no such connection in this workspace')
  return request.connection
}

/** The deliveries routes of api.md (Delivery modes): read, replay and discard queued deliveries. */
const deliveries: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, { config }) => {
  app.addHook('onRequest', async (request) => {
    request.logFields.connectionId = (request.params as { connectionId?: string }).connectionId
    await app.authenticateConnection(request)
  })
  const queue = app.store.queue
  const base = '/v1/connections/:connectionId/deliveries'

  app.get(`${base}/:deliveryId`, {
    schema: {
      tags: ['deliveries'],
      summary: 'Read a queued delivery (never its events)',
      security,
      params: DeliveryParams,
      response: { 200: Delivery, ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request) => {
    const connection = connectionOf(request)
    const record = await queue.get(connection.id, request.params.deliveryId)
    if (record === undefined) throw deliveryNotFound()
    return toDeliveryView(record)
  })

  app.get(base, {
    schema: {
      tags: ['deliveries'],
      summary: 'List a connection\'s queued deliveries, newest first',
      security,
      params: ConnectionIdParams,
      querystring: ListQuery,
      response: {
        200: Type.Object({
          deliveries: Type.Array(Delivery),
          nextCursor: Type.Optional(Type.String({ description: 'Pass as cursor for the next page; absent on the last page' }))
        }, { examples: [{ deliveries: Delivery.examples, nextCursor: 'WyIyMDI2LTExLTI4VDEyOjAwOjAwLjAwMFoiLCJkbHZfMlZuOFFwWDRjTG1UN3JCMWtaczlhRCJd' }] }),
        ...problemResponses(400, 401, 404, 429, 503)
      }
    }
  }, async (request) => {
    const connection = connectionOf(request)
    const limit = request.query.limit === undefined ? 50 : Number(request.query.limit)
    const before = request.query.cursor === undefined ? undefined : decodeCursor(request.query.cursor)
    const records = await queue.list(connection.id, { state: request.query.state, limit: limit + 1, before })
    const page = records.slice(0, limit)
    return {
      deliveries: page.map(toDeliveryView),
      ...(records.length > limit ? { nextCursor: encodeCursor(page[page.length - 1]!) } : {})
    }
  })

  app.post(`${base}/:deliveryId/retry`, {
    schema: {
      tags: ['deliveries'],
      summary: 'Queue a failed delivery again, due now, with a new maximum age',
      security,
      params: DeliveryParams,
      response: { 202: Delivery, ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request, reply) => {
    const connection = connectionOf(request)
    const now = Date.now()
    const record = await queue.retry(connection.id, request.params.deliveryId, now, now + config.delivery.maxAgeMs)
    if (record === undefined) {
      // A delivery that exists but has not failed is not a dead letter to replay.
      if (await queue.get(connection.id, request.params.deliveryId) === undefined) throw deliveryNotFound()
      throw new AppError('delivery_not_found', 'no failed delivery by this id on this connection (only failed deliveries can be retried)')
    }
    app.delivery.worker.wake()
    return await reply.code(202).send(toDeliveryView(record))
  })

  app.post(`${base}/retry`, {
    schema: {
      tags: ['deliveries'],
      summary: 'Queue every failed delivery of the connection again, due now',
      security,
      params: ConnectionIdParams,
      response: { 202: Type.Object({ requeued: Type.Integer({ minimum: 0, description: 'Failed deliveries queued again' }) }, { examples: [{ requeued: 3 }] }), ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request, reply) => {
    const connection = connectionOf(request)
    const now = Date.now()
    const requeued = await queue.retryAllFailed(connection.id, now, now + config.delivery.maxAgeMs)
    if (requeued > 0) app.delivery.worker.wake()
    return await reply.code(202).send({ requeued })
  })

  app.delete(`${base}/:deliveryId`, {
    schema: {
      tags: ['deliveries'],
      summary: 'Discard a queued or failed delivery and its events',
      security,
      params: DeliveryParams,
      response: { 204: Type.Null({ description: 'Discarded' }), ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request, reply) => {
    const connection = connectionOf(request)
    if (!await queue.discard(connection.id, request.params.deliveryId)) throw deliveryNotFound()
    return await reply.code(204).send(null)
  })
}

export default deliveries

/** Whether a Prefer header (RFC 7240: comma-separated, tokens case-insensitive) asks for respond-async. */
export function prefersAsync (header: string | string[] | undefined): boolean {
  if (header === undefined) return false
  const values = Array.isArray(header) ? header : [header]
  return values.some((value) => value.split(',').some((preference) => preference.split(/[;=]/, 1)[0]!.trim().toLowerCase() === 'respond-async'))
}

export const PreferHeader = Type.String({
  description: 'respond-async: queue the events (committed, encrypted) and answer 202 at once; a worker delivers them with retries through Segment outages. ?dryRun=true wins.',
  examples: ['respond-async']
})
