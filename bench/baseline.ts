// The least a Fastify + undici forwarder can cost: parse the JSON body (Fastify's default parser),
// serialise it again and POST it to the same upstream with the same Basic header and the same pool
// settings as the service. No auth, store, validation, crypto, logging or metrics.
import Fastify, { type FastifyInstance } from 'fastify'
import { Pool } from 'undici'

const segmentPaths: Record<string, string> = {
  'track-event': '/v1/track',
  'identify-user': '/v1/identify',
  'group-user': '/v1/group',
  'page-view': '/v1/page',
  'alias-user': '/v1/alias',
  'batch-send': '/v1/batch'
}

export interface BaselineOptions {
  upstream: string
  writeKey: string
}

export function buildBaseline ({ upstream, writeKey }: BaselineOptions): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 2 * 1024 * 1024 })
  // The service's SegmentClient pool settings.
  const pool = new Pool(upstream, { connections: 64, pipelining: 1 })
  const headers = {
    'content-type': 'application/json',
    authorization: 'Basic ' + Buffer.from(writeKey + ':').toString('base64'),
    'user-agent': 'baseline'
  }
  app.addHook('onClose', async () => { await pool.close() })

  app.post<{ Params: { action: string } }>('/v1/connections/:connectionId/actions/:action', async (request, reply) => {
    const path = segmentPaths[request.params.action]
    if (path === undefined) return await reply.code(404).send({ code: 'not_found' })
    const response = await pool.request({ path, method: 'POST', headers, body: JSON.stringify(request.body) })
    await response.body.dump()
    return await reply.code(response.statusCode).send({ status: 'accepted', upstreamStatus: response.statusCode })
  })
  return app
}
