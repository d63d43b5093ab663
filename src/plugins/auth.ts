import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'
import { bearerToken, hashesEqual, hashToken, isWellFormedToken, secretsEqual } from '../tokens.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook for workspace routes: sets request.workspaceId or answers 401. */
    authenticateWorkspace: (request: FastifyRequest) => Promise<void>
    /** onRequest hook for admin routes: 404 when ADMIN_TOKEN is unset, 401 on a wrong token. */
    authenticateAdmin: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    workspaceId: string
  }
}

// One answer for every way a credential can be wrong, so none can be told apart.
const unauthorized = (): AppError => new AppError('unauthorized', 'a valid bearer token is required')

export default fp<{ config: Config }>(async (app, { config }) => {
  app.decorateRequest('workspaceId', '')

  app.decorate('authenticateWorkspace', async (request: FastifyRequest) => {
    const token = bearerToken(request.headers.authorization)
    if (token === undefined || !isWellFormedToken(token)) throw unauthorized()
    const hash = hashToken(token)
    const record = await app.store.findToken(hash)
    // The lookup is by hash; comparing again in constant time keeps timing independent of any
    // index or collation behaviour of the store.
    if (record === undefined || !hashesEqual(record.hash, hash)) throw unauthorized()
    request.workspaceId = record.workspaceId
  })

  const adminToken = config.adminToken
  app.decorate('authenticateAdmin', async (request: FastifyRequest) => {
    if (adminToken === undefined || adminToken === '') throw new AppError('not_found', 'no such route')
    const token = bearerToken(request.headers.authorization)
    if (token === undefined || !secretsEqual(token, adminToken)) throw unauthorized()
  })
}, { name: 'auth', dependencies: ['store'] })
