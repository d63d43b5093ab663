import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { problemResponses } from '../errors.js'
import { StringEnum } from '../schema-helpers.js'
import { guardQueued } from './deliveries-guard.js'

const security = [{ workspaceToken: [] }]

export const ConnectionIdParams = Type.Object({
  connectionId: Type.String({ minLength: 1, maxLength: 64, examples: ['con_7hQ2xV9mLc4RtB1nKp8wZd'] })
})

// Printable ASCII without spaces or ':' (the Basic username cannot hold a colon).
const WriteKey = Type.String({
  minLength: 1,
  maxLength: 256,
  pattern: '^[!-9;-~]+$',
  description: 'The source\'s Write Key. Stored encrypted; never returned or logged.',
  examples: ['9f8e7d6c5b4a39281706f5e4d3c2b1a0']
})
const Password = Type.String({
  maxLength: 256,
  description: 'Documentation only (the TaskJuice form has this field). Segment uses a blank password: a non-empty value is neither stored nor sent, and the answer carries a warning.'
})
const Region = StringEnum(['us', 'eu'], {
  description: 'us: SEGMENT_API_URL (https://api.segment.io); eu: SEGMENT_EU_API_URL (https://events.eu1.segmentapis.com). EU-workspace Write Keys need eu.'
})
const Endpoint = Type.String({
  maxLength: 2048,
  description: 'A custom Segment-compatible base URL; accepted only when listed in the operator\'s SEGMENT_ALLOWED_ENDPOINTS.',
  examples: ['https://segment-proxy.example.com']
})
const Name = Type.String({ minLength: 1, maxLength: 200 })
const Timestamp = Type.String({ format: 'date-time' })

export const Connection = Type.Object({
  id: Type.String(),
  name: Type.String(),
  region: Region,
  endpoint: Type.Optional(Type.String()),
  writeKeyHint: Type.String({ description: 'At most the last 4 characters of the Write Key', examples: ['…b1a0'] }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  warnings: Type.Optional(Type.Array(Type.String()))
}, {
  title: 'Connection',
  examples: [{ id: 'con_7hQ2xV9mLc4RtB1nKp8wZd', name: 'Client A production', region: 'us', writeKeyHint: '…b1a0', createdAt: '2026-11-28T12:00:00.000Z', updatedAt: '2026-11-28T12:00:00.000Z' }]
})

const connections: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticateWorkspace)
  app.addHook('preValidation', async (request) => {
    const params = request.params as { connectionId?: string }
    if (params.connectionId !== undefined) request.logFields.connectionId = params.connectionId
  })

  app.post('/v1/connections', {
    schema: {
      tags: ['connections'],
      summary: 'Connect a client\'s Segment source by its Write Key',
      security,
      body: Type.Object({
        name: Name,
        writeKey: WriteKey,
        password: Type.Optional(Password),
        region: Type.Optional(Region),
        endpoint: Type.Optional(Endpoint)
      }, { additionalProperties: false, examples: [{ name: 'Client A production', writeKey: '9f8e7d6c5b4a39281706f5e4d3c2b1a0', region: 'us' }] }),
      response: { 201: Connection, ...problemResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const view = await app.connections.create(request.workspaceId, request.body)
    request.logFields.connectionId = view.id
    return reply.code(201).send(view)
  })

  app.get('/v1/connections', {
    schema: {
      tags: ['connections'],
      summary: 'List this workspace\'s connections',
      security,
      response: {
        200: Type.Object({ connections: Type.Array(Connection) }, { examples: [{ connections: Connection.examples }] }),
        ...problemResponses(401, 429, 503)
      }
    }
  }, async (request) => ({ connections: await app.connections.list(request.workspaceId) }))

  app.get('/v1/connections/:connectionId', {
    schema: {
      tags: ['connections'],
      summary: 'Read a connection (never its Write Key)',
      security,
      params: ConnectionIdParams,
      response: { 200: Connection, ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request) => await app.connections.get(request.workspaceId, request.params.connectionId))

  app.patch('/v1/connections/:connectionId', {
    schema: {
      tags: ['connections'],
      summary: 'Rename a connection or change its region or endpoint',
      security,
      params: ConnectionIdParams,
      body: Type.Object({
        name: Type.Optional(Name),
        region: Type.Optional(Region),
        endpoint: Type.Optional(Type.Union([Endpoint, Type.Null()], { description: 'null removes the custom endpoint' }))
      }, { additionalProperties: false, minProperties: 1, examples: [{ region: 'eu' }] }),
      response: { 200: Connection, ...problemResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => await app.connections.update(request.workspaceId, request.params.connectionId, request.body))

  app.put('/v1/connections/:connectionId/write-key', {
    schema: {
      tags: ['connections'],
      summary: 'Rotate the Write Key; the very next action, on every replica, uses the new key',
      security,
      params: ConnectionIdParams,
      body: Type.Object({ writeKey: WriteKey, password: Type.Optional(Password) }, {
        additionalProperties: false,
        examples: [{ writeKey: '0a1b2c3d4e5f60718293a4b5c6d7e8f9' }]
      }),
      response: { 200: Connection, ...problemResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => await app.connections.rotateWriteKey(request.workspaceId, request.params.connectionId, request.body.writeKey, request.body.password))

  app.delete('/v1/connections/:connectionId', {
    schema: {
      tags: ['connections'],
      summary: 'Delete a connection and its stored Write Key',
      security,
      params: ConnectionIdParams,
      querystring: Type.Object({
        discardQueued: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], {
          description: 'true: delete even with queued deliveries, discarding them; otherwise such a delete is 409 deliveries_pending'
        }))
      }, { additionalProperties: false }),
      response: { 204: Type.Null({ description: 'Deleted' }), ...problemResponses(400, 401, 404, 409, 429, 503) }
    }
  }, async (request, reply) => {
    // Queued delivery (src/delivery/): queued events are not dropped silently.
    await guardQueued(app, request.workspaceId, request.params.connectionId, request.query.discardQueued === 'true')
    await app.connections.delete(request.workspaceId, request.params.connectionId)
    return reply.code(204).send(null)
  })
}

export default connections
