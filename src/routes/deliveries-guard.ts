import type { FastifyInstance } from 'fastify'
import { AppError } from '../errors.js'

/**
 * DELETE of a connection: 409 deliveries_pending while it has queued deliveries, or, with
 * `discard`, its deliveries deleted first (404 stays the connection delete's own answer).
 */
export async function guardQueued (app: FastifyInstance, workspaceId: string, connectionId: string, discard: boolean): Promise<void> {
  if (await app.store.getConnection(workspaceId, connectionId) === undefined) return
  if (discard) {
    await app.store.queue.discardConnection(connectionId)
    return
  }
  const pending = await app.store.queue.pending(connectionId)
  if (pending > 0) {
    throw new AppError('deliveries_pending', `The connection has ${pending} queued deliveries; deliver or discard them first, or delete with ?discardQueued=true.`, { pending })
  }
}
