import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { problemResponses } from '../errors.js'
import { guardQueued } from './deliveries-guard.js'
import { Connection, CreateConnectionBody, Endpoint, Name, OAuthInputSchema, Password, Region, WriteKey } from '../connection-schemas.js'

const security = [{ workspaceToken: [] }]

export const ConnectionIdParams = Type.Object({
  connectionId: Type.String({ minLength: 1, maxLength: 64, examples: ['con_7hQ2xV9mLc4RtB1nKp8wZd'] })
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
      operationId: 'createConnection',
      security,
      body: CreateConnectionBody,
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
      operationId: 'listConnections',
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
      operationId: 'getConnection',
      security,
      params: ConnectionIdParams,
      response: { 200: Connection, ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request) => await app.connections.get(request.workspaceId, request.params.connectionId))

  app.patch('/v1/connections/:connectionId', {
    schema: {
      tags: ['connections'],
      summary: 'Rename a connection or change its region or endpoint',
      operationId: 'updateConnection',
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
      operationId: 'rotateWriteKey',
      security,
      params: ConnectionIdParams,
      body: Type.Object({ writeKey: WriteKey, password: Type.Optional(Password) }, {
        additionalProperties: false,
        examples: [{ writeKey: '0a1b2c3d4e5f60718293a4b5c6d7e8f9' }]
      }),
      response: { 200: Connection, ...problemResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => await app.connections.rotateWriteKey(request.workspaceId, request.params.connectionId, request.body.writeKey, request.body.password))

  app.put('/v1/connections/:connectionId/oauth', {
    schema: {
      tags: ['connections'],
      summary: 'Set or rotate OAuth credentials; the very next action uses the new key and a new token',
      security,
      params: ConnectionIdParams,
      body: OAuthInputSchema,
      response: { 200: Connection, ...problemResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const view = await app.connections.setOAuth(request.workspaceId, request.params.connectionId, request.body)
    app.oauth.forget(view.id)
    return view
  })

  app.delete('/v1/connections/:connectionId/oauth', {
    schema: {
      tags: ['connections'],
      summary: 'Remove OAuth credentials; calls go back to Basic auth with the Write Key',
      security,
      params: ConnectionIdParams,
      response: { 200: Connection, ...problemResponses(401, 404, 429, 503) }
    }
  }, async (request) => {
    const view = await app.connections.removeOAuth(request.workspaceId, request.params.connectionId)
    app.oauth.forget(view.id)
    return view
  })

  app.delete('/v1/connections/:connectionId', {
    schema: {
      tags: ['connections'],
      summary: 'Delete a connection and its stored Write Key',
      operationId: 'deleteConnection',
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
    app.oauth.forget(request.params.connectionId)
    return reply.code(204).send(null)
  })
}

export default connections
