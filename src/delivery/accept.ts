import { AppError } from '../errors.js'
import { newId } from '../ids.js'
import type { ActionName } from '../segment/actions.js'
import type { UpstreamRequest } from '../segment/build.js'
import type { KeyRing } from '../store/crypto.js'
import { StoreUnavailableError } from '../store/store.js'
import { deliveryAad, queuedItems, sealItems } from './payload.js'
import { ConnectionGoneError, type QueueStore } from './queue-store.js'

/** Retry-After of a queue_full answer: long enough for the workers to make room. */
export const QUEUE_FULL_RETRY_AFTER_S = 30

export interface Queued {
  deliveryId: string
  acceptedAt: Date
}

/**
 * Commits a built action as a queued delivery, or throws: 503 queue_full (nothing queued) when
 * the workspace's queue would pass its limit, 404 when the connection was deleted meanwhile, 503
 * store_unavailable when the store cannot commit.
 */
export async function enqueueAction (queue: QueueStore, ring: KeyRing, input: {
  action: ActionName
  upstream: UpstreamRequest
  workspaceId: string
  connectionId: string
  maxAgeMs: number
  queueMaxEvents: number
  maxEventBytes: number
  /** The Write Key is paced after a 429 until then (ms), if at all. */
  pacedUntil?: number | undefined
}): Promise<Queued> {
  const acceptedAt = new Date()
  const deliveryId = newId('dlv')
  const items = queuedItems(input.action, input.upstream, acceptedAt)
  // As a batch item an event also carries its `type` and, when it had none, a timestamp: an event
  // that fits a sync call by a few bytes may not fit Segment's per-event limit any more. Say so now
  // rather than turn it into a dead letter later.
  items.forEach((item, index) => {
    const size = Buffer.byteLength(item)
    if (size > input.maxEventBytes) {
      throw new AppError('payload_too_large', `Queued as a batch item (with its type and timestamp), ${input.action === 'batch-send' ? `item ${index}` : 'the event'} is ${size} bytes; Segment accepts at most ${input.maxEventBytes} per event.`, {
        limit: input.maxEventBytes, size, ...(input.action === 'batch-send' ? { index } : {})
      })
    }
  })
  const payload = sealItems(ring, items, deliveryAad(input.workspaceId, input.connectionId, deliveryId))
  let stored: boolean
  try {
    stored = await queue.enqueue({
      id: deliveryId,
      workspaceId: input.workspaceId,
      connectionId: input.connectionId,
      action: input.action,
      events: input.upstream.events,
      bytes: input.upstream.bytes,
      messageIds: input.upstream.messageIds,
      createdAt: acceptedAt.toISOString(),
      createdMs: acceptedAt.getTime(),
      expiresMs: acceptedAt.getTime() + input.maxAgeMs,
      dueMs: Math.max(acceptedAt.getTime(), input.pacedUntil ?? 0),
      payload
    }, input.queueMaxEvents)
  } catch (error) {
    if (error instanceof ConnectionGoneError) throw new AppError('connection_not_found', 'no such connection in this workspace')
    if (error instanceof StoreUnavailableError) throw error
    // SQLite that cannot write (disk full, locked past busy_timeout, read-only): nothing was committed.
    if (typeof (error as { code?: unknown }).code === 'string' && (error as { code: string }).code.startsWith('SQLITE_')) {
      throw new StoreUnavailableError('the store could not commit the delivery', { cause: error })
    }
    throw error
  }
  if (!stored) {
    throw new AppError('queue_full', `The workspace's queue holds its limit of ${input.queueMaxEvents} queued events; nothing was queued.`, {}, QUEUE_FULL_RETRY_AFTER_S)
  }
  return { deliveryId, acceptedAt }
}
