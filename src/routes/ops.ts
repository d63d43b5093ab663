import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError, problemResponses } from '../errors.js'
import { checkCanary } from '../store/canary.js'

const Status = Type.Object({ status: Type.String() })

const ops: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', {
    schema: {
      tags: ['operations'],
      summary: 'Liveness: the process is up',
      response: { 200: { ...Status, examples: [{ status: 'ok' }] } }
    }
  }, async () => ({ status: 'ok' }))

  app.get('/readyz', {
    schema: {
      tags: ['operations'],
      summary: 'Readiness: the store answers and the key ring opens the stored canary',
      response: { 200: { ...Status, examples: [{ status: 'ready' }] }, ...problemResponses(503) }
    }
  }, async (request) => {
    try {
      await app.store.ping()
      await checkCanary(app.store, app.keyRing)
    } catch (error) {
      request.log.warn({ err: error }, 'not ready')
      throw new AppError('not_ready', 'the store or the key ring is not ready', {}, 1)
    }
    return { status: 'ready' }
  })
}

export default ops
