import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError, problemResponses } from '../errors.js'
import { IssuedTokenSchema as IssuedToken, TokenValue, createToken, createWorkspace } from '../workspaces.js'

const security = [{ adminToken: [] }]
const WorkspaceId = Type.String({ minLength: 1, maxLength: 64, examples: ['ws_3kTMd6fXh2Wq8bN1pLr0aZ'] })
const Timestamp = Type.String({ format: 'date-time', examples: ['2026-11-28T12:00:00.000Z'] })

const Workspace = Type.Object({ id: WorkspaceId, name: Type.String(), createdAt: Timestamp }, { title: 'Workspace' })
const workspaceExample = { id: 'ws_3kTMd6fXh2Wq8bN1pLr0aZ', name: 'Acme Agency', createdAt: '2026-11-28T12:00:00.000Z' }
const tokenExample = 'sfw_2Yv9kQ4mXc7RtB1nLp8wZs0dHf3jGa6eUo5iKy9x1B2c3D'
const CreatedWorkspace = Type.Object({ ...Workspace.properties, token: TokenValue }, { title: 'CreatedWorkspace', examples: [{ ...workspaceExample, token: tokenExample }] })

const admin: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.authenticateAdmin)

  app.post('/v1/admin/workspaces', {
    schema: {
      tags: ['admin'],
      summary: 'Create a workspace (an agency) and its first API token',
      operationId: 'createWorkspace',
      security,
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false, examples: [{ name: 'Acme Agency' }] }),
      response: { 201: CreatedWorkspace, ...problemResponses(400, 401, 404, 413, 415, 503) }
    }
  }, async (request, reply) => {
    const created = await createWorkspace(app.store, request.body.name)
    return reply.code(201).send({ id: created.id, name: created.name, createdAt: created.createdAt, token: created.token.token })
  })

  app.get('/v1/admin/workspaces', {
    schema: {
      tags: ['admin'],
      summary: 'List workspaces',
      operationId: 'listWorkspaces',
      security,
      response: { 200: Type.Object({ workspaces: Type.Array(Workspace) }, { examples: [{ workspaces: [workspaceExample] }] }), ...problemResponses(401, 404, 503) }
    }
  }, async () => ({ workspaces: await app.store.listWorkspaces() }))

  app.post('/v1/admin/workspaces/:workspaceId/tokens', {
    schema: {
      tags: ['admin'],
      summary: 'Issue another API token for a workspace',
      operationId: 'createToken',
      security,
      params: Type.Object({ workspaceId: WorkspaceId }),
      response: { 201: IssuedToken, ...problemResponses(401, 404, 503) }
    }
  }, async (request, reply) => {
    const issued = await createToken(app.store, request.params.workspaceId)
    if (issued === undefined) throw new AppError('workspace_not_found', 'no such workspace')
    request.workspaceId = request.params.workspaceId
    return reply.code(201).send(issued)
  })

  app.delete('/v1/admin/workspaces/:workspaceId/tokens/:tokenId', {
    schema: {
      tags: ['admin'],
      summary: 'Revoke a token; it stops working at once, on every replica',
      operationId: 'revokeToken',
      security,
      params: Type.Object({ workspaceId: WorkspaceId, tokenId: Type.String({ minLength: 1, maxLength: 64 }) }),
      response: { 204: Type.Null({ description: 'Revoked' }), ...problemResponses(401, 404, 503) }
    }
  }, async (request, reply) => {
    const revoked = await app.store.revokeToken(request.params.workspaceId, request.params.tokenId, new Date().toISOString())
    if (!revoked) throw new AppError('token_not_found', 'no live token with that id in that workspace')
    request.workspaceId = request.params.workspaceId
    return reply.code(204).send(null)
  })
}

export default admin
