import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError, problemResponses } from '../errors.js'
import { checkCanary, checkKeyIds } from '../store/canary.js'

const Status = Type.Object({ status: Type.String() })

const ops: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', {
    schema: {
      tags: ['operations'],
      summary: 'Liveness: the process is up',
      operationId: 'healthz',
      security: [],
      response: { 200: { ...Status, examples: [{ status: 'ok' }] } }
    }
  }, async () => ({ status: 'ok' }))

  app.get('/readyz', {
    schema: {
      tags: ['operations'],
      summary: 'Readiness: the store answers, the key ring opens the stored canary and holds every key id in use',
      operationId: 'readyz',
      security: [],
      response: { 200: { ...Status, examples: [{ status: 'ready' }] }, ...problemResponses(503) }
    }
  }, async (request) => {
    try {
      await app.store.ping()
      await checkCanary(app.store, app.keyRing)
      await checkKeyIds(app.store, app.keyRing)
    } catch (error) {
      request.log.warn({ err: error }, 'not ready')
      throw new AppError('not_ready', 'the store or the key ring is not ready', {}, 1)
    }
    return { status: 'ready' }
  })
}

export default ops
