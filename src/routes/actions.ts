import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Config } from '../config.js'
import { AppError, problemResponses } from '../errors.js'
import { Idempotency } from '../idempotency.js'
import { actionNames, actions } from '../segment/actions.js'
import { buildUpstream } from '../segment/build.js'
import { Cancel } from '../segment/client.js'
import { laneKey } from '../segment/coalesce.js'
import { ActionAccepted, BatchAccepted } from '../segment/schemas.js'
import { ConnectionIdParams } from './connections.js'
import { PreferHeader, prefersAsync, Queued } from './deliveries.js'

const security = [{ workspaceToken: [] }]

const Query = Type.Object({
  dryRun: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], {
    description: 'true: validate, build and measure the exact upstream body, send nothing; answers status "validated"'
  }))
}, { additionalProperties: false })

const Headers = Type.Object({
  'idempotency-key': Type.Optional(Type.String({
    minLength: 1,
    maxLength: 255,
    description: 'As the IETF httpapi draft "The Idempotency-Key HTTP Header Field". Generated messageIds derive from workspace, connection, action, this key and the item index, so a retried workflow step sends the same messageIds. The key is remembered per workspace, connection and action with a fingerprint of the body (the same JSON matches, whatever its whitespace, key order or sentAt) for 24 hours once its request ended in a 2xx: the same key and body gets that answer again with `Idempotent-Replayed: true` and nothing is sent; another body is 422 idempotency_key_reused; while the first request is still running, 409 idempotency_key_in_use. A request that ended in an error is not remembered, so it can be retried with the same key.',
    examples: ['run-8812-step-3']
  })),
  prefer: Type.Optional(PreferHeader)
})

// Response headers of a 200, for the OpenAPI document (@fastify/swagger moves them out of the schema).
const ReplayHeaders = {
  'Idempotent-Replayed': Type.Literal('true', {
    description: 'Only on a replay: the answer remembered for this Idempotency-Key and body; nothing was sent to Segment this time.'
  })
}

function limitsText (config: Config['segment'], batch: boolean): string {
  return batch
    ? `Limits, in UTF-8 bytes of the exact JSON sent upstream: each item (with the batch's context and integrations merged in) at most ${config.maxEventBytes}; the whole body at most ${config.maxBatchBytes}; at most 2,500 items. Past a byte limit: 413 payload_too_large, nothing sent.`
    : `Limit: the exact JSON body sent upstream is at most ${config.maxEventBytes} UTF-8 bytes; past it, 413 payload_too_large and nothing is sent.`
}

// The errors of an action that may have reached Segment: their answers name what was sent.
const MAY_HAVE_REACHED_SEGMENT = new Set(['segment_rejected', 'segment_unavailable', 'segment_timeout'])
// A running request holds its Idempotency-Key this long past the upstream deadline (store writes,
// the caller's own slowness); a replica that dies mid-request blocks the key no longer than that.
const IDEMPOTENCY_LEASE_SLACK_MS = 30_000
const COALESCING_NOTE = 'Concurrent calls for one connection share upstream requests: a call sent while the connection has no request in flight goes at once to its own Segment path; calls that arrive while one is in flight wait for it and go together in one `/v1/batch` (a batch-send is never split; its `context` and `integrations` are merged into its own items). Each caller still gets its own answer, and its deadline counts from its arrival. Too many events waiting for one connection: 503 overloaded with Retry-After.'

const ACCEPTED_NOTE = '"accepted" means Segment\'s Tracking API took the payload (a 2xx), not that downstream destinations processed it; note that Segment also answers 200 to an unknown Write Key, so check the source\'s Debugger after connecting.'

/** One route per action, each with its own schema; the handler is the same pipeline for all. */
const actionRoutes: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, { config }) => {
  // Refuse oversized requests while they stream in. JSON sent by callers may be pretty-printed, so
  // allow headroom over the upstream limits, which build.ts enforces byte-exactly.
  const eventBodyLimit = Math.max(64 * 1024, config.segment.maxEventBytes * 4)
  const batchBodyLimit = config.segment.maxBatchBytes * 2 + 64 * 1024
  const idempotency = new Idempotency(app.store, { leaseMs: config.segment.deadlineMs + IDEMPOTENCY_LEASE_SLACK_MS })

  for (const name of actionNames) {
    const action = actions[name]
    const batch = name === 'batch-send'
    app.post(`/v1/connections/:connectionId/actions/${name}`, {
      bodyLimit: batch ? batchBodyLimit : eventBodyLimit,
      onRequest: async (request) => {
        // Named in the log line and metrics even when authentication or validation refuses the request.
        request.logFields.action = name
        request.logFields.connectionId = request.params.connectionId
        await app.authenticateConnection(request)
      },
      schema: {
        tags: ['actions'],
        summary: action.summary,
        description: `${action.description}\n\n${limitsText(config.segment, batch)}\n\n${config.segment.coalesce ? COALESCING_NOTE + '\n\n' : ''}${ACCEPTED_NOTE}`,
        operationId: name.replace(/-(\w)/g, (_m, c: string) => c.toUpperCase()),
        security,
        params: ConnectionIdParams,
        querystring: Query,
        headers: Headers,
        body: action.body,
        response: {
          200: { ...(batch ? BatchAccepted : ActionAccepted), headers: ReplayHeaders },
          202: Queued,
          ...problemResponses(400, 401, 404, 409, 413, 415, 422, 429, 502, 503, 504)
        }
      }
    }, async (request, reply) => {
      const { workspaceId } = request
      const { connectionId } = request.params
      const fields = request.logFields

      // Read with the token as the request arrived (authenticateConnection): a change committed
      // while the body was still uploading applies from the next action on. A missing one is 404
      // only now, after validation, as for every other route.
      const connection = app.connections.ready(request.connection)
      const idempotencyKey = request.headers['idempotency-key']
      const upstream = buildUpstream(name, request.body, {
        workspaceId,
        connectionId,
        idempotencyKey,
        maxEventBytes: config.segment.maxEventBytes,
        maxBatchBytes: config.segment.maxBatchBytes,
        // OAuth sources: the Write Key in the body too, counted in the limits.
        bodyWriteKey: connection.oauth === undefined ? undefined : connection.writeKey
      })
      fields.events = upstream.events
      fields.bytes = upstream.bytes
      const ids = batch
        ? { messageIds: upstream.messageIds, count: upstream.events }
        : { messageId: upstream.messageIds[0]! }

      if (request.query.dryRun === 'true') {
        fields.dryRun = true
        return answer({ status: 'validated', action: name, ...ids, bytes: upstream.bytes, attempts: 0 })
      }

      // Queued delivery (src/delivery/): committed, then 202; a worker sends it. Before the
      // Idempotency-Key claim: a queued call is not remembered, but a retried one with the same key
      // queues the same messageIds, which Segment drops as duplicates.
      if (prefersAsync(request.headers.prefer)) {
        const { deliveryId } = await app.delivery.accept({ action: name, upstream, workspaceId, connectionId })
        reply.code(202)
          .header('preference-applied', 'respond-async')
          .header('location', `/v1/connections/${encodeURIComponent(connectionId)}/deliveries/${deliveryId}`)
        return answer({ status: 'queued', action: name, ...ids, bytes: upstream.bytes, deliveryId })
      }

      const started = idempotencyKey === undefined
        ? undefined
        : await idempotency.start({ workspaceId, connectionId, action: name, key: idempotencyKey }, request.body, request.log)
      if (started?.replay !== undefined) {
        // The same body again: its messageIds are the ones just rebuilt; the rest is remembered.
        fields.idempotentReplay = true
        reply.header('idempotent-replayed', 'true')
        return answer({ status: 'accepted', action: name, ...ids, ...started.replay })
      }
      const ticket = started?.ticket

      app.metrics.payloadBytes.observe({ action: name }, upstream.bytes)
      const result = await app.coalescer.send({
        // OAuth sources share a lane only with calls of the same app, key and private key.
        lane: laneKey(connectionId, connection.baseUrl, connection.oauth === undefined
          ? connection.writeKey
          : [connection.writeKey, connection.oauth.clientId, connection.oauth.keyId, connection.oauth.authServer, connection.oauth.sealed.toString('base64')].join('\0')),
        baseUrl: connection.baseUrl,
        writeKey: connection.writeKey,
        upstream,
        // OAuth sources: a bearer token instead of Basic (segment/oauth.ts), and the Write Key at
        // the top of every body, joined ones too.
        topLevel: connection.oauth === undefined ? undefined : { writeKey: connection.writeKey },
        credentials: connection.oauth === undefined ? undefined : app.oauth.credentials(connection.oauth, connection.writeKey),
        signal: callerGone(reply.raw)
      }, {
        onSent: (upstreamEvents) => { fields.upstreamEvents = upstreamEvents },
        onAttempt: ({ attempt, status, error }) => {
          fields.attempts = attempt
          if (typeof status === 'number') fields.upstreamStatus = status
          // The last attempt's reason: an answer after a failed attempt clears it.
          fields.upstreamError = error
        }
      }).catch(async (error: unknown) => {
        if (ticket !== undefined) await idempotency.release(ticket, request.log)
        if (error instanceof AppError && MAY_HAVE_REACHED_SEGMENT.has(error.code)) {
          Object.assign(error.extras, batch ? { messageIds: upstream.messageIds } : { messageId: upstream.messageIds[0] })
        }
        throw error
      })
      const remembered = { bytes: upstream.bytes, attempts: result.attempts, upstreamStatus: result.upstreamStatus }
      if (ticket !== undefined) await idempotency.complete(ticket, remembered, request.log)
      return answer({ status: 'accepted', action: name, ...ids, ...remembered })
    })
  }
}

// The loop registers six routes with one handler, so TypeScript sees the union of the six reply
// types; the response schemas (ActionAccepted / BatchAccepted) check the actual shape.
function answer (reply: Record<string, unknown>): never {
  return reply as never
}

/**
 * Fires when the caller disconnects before we answer: nobody would read the answer, and a retry
 * with the same Idempotency-Key sends the same messageIds anyway. The coalescer answers that caller
 * at once and drops its call if it is still waiting; a request in flight stops only when every
 * caller it carries has gone. Listens on this request's own response, not on the socket: a
 * keep-alive socket carries many requests, and a listener per request on it would pile up (each
 * holding its controller) until the socket closed.
 */
function callerGone (response: import('node:http').ServerResponse): Cancel {
  const gone = new Cancel()
  response.once('close', () => {
    if (response.writableFinished) return
    gone.abort(new AppError('segment_unavailable', 'the caller disconnected before Segment answered'))
  })
  return gone
}

export default actionRoutes
