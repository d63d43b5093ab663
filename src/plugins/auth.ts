import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { Config } from '../config.js'
import type { ConnectionRecord } from '../store/store.js'
import { AppError } from '../errors.js'
import { bearerToken, hashesEqual, hashToken, isWellFormedToken, secretsEqual } from '../tokens.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook for workspace routes: sets request.workspaceId or answers 401. */
    authenticateWorkspace: (request: FastifyRequest) => Promise<void>
    /**
     * onRequest hook for routes under /v1/connections/:connectionId: authenticateWorkspace plus,
     * in the same store read, the workspace's connection of that id as request.connection (null
     * when it has none), so an action costs one round trip to the store.
     */
    authenticateConnection: (request: FastifyRequest) => Promise<void>
    /** onRequest hook for admin routes: 404 when ADMIN_TOKEN is unset, 401 on a wrong token. */
    authenticateAdmin: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    workspaceId: string
    connection: ConnectionRecord | null
  }
}

// One answer for every way a credential can be wrong, so none can be told apart.
const unauthorized = (): AppError => new AppError('unauthorized', 'a valid bearer token is required')

/**
 * The SHA-256 of the request's bearer token, or 401 for a missing or malformed one, without
 * touching the store. The store looks the hash up; callers compare it again in constant time, so
 * timing does not depend on any index or collation behaviour of the store.
 */
function presentedHash (request: FastifyRequest): string {
  const token = bearerToken(request.headers.authorization)
  if (token === undefined || !isWellFormedToken(token)) throw unauthorized()
  return hashToken(token)
}

export default fp<{ config: Config }>(async (app, { config }) => {
  app.decorateRequest('workspaceId', '')
  app.decorateRequest('connection', null)

  app.decorate('authenticateWorkspace', async (request: FastifyRequest) => {
    const hash = presentedHash(request)
    const record = await app.store.findToken(hash)
    if (record === undefined || !hashesEqual(record.hash, hash)) throw unauthorized()
    request.workspaceId = record.workspaceId
  })

  app.decorate('authenticateConnection', async (request: FastifyRequest) => {
    const hash = presentedHash(request)
    const found = await app.store.findTokenWithConnection(hash, (request.params as { connectionId: string }).connectionId)
    if (found === undefined || !hashesEqual(found.token.hash, hash)) throw unauthorized()
    request.workspaceId = found.token.workspaceId
    request.connection = found.connection ?? null
  })

  const adminToken = config.adminToken
  app.decorate('authenticateAdmin', async (request: FastifyRequest) => {
    if (adminToken === undefined || adminToken === '') throw new AppError('not_found', 'no such route')
    const token = bearerToken(request.headers.authorization)
    if (token === undefined || !secretsEqual(token, adminToken)) throw unauthorized()
  })
}, { name: 'auth', dependencies: ['store'] })
