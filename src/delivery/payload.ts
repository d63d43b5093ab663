// What a queued delivery stores: its events as Segment will get them inside /v1/batch, one JSON
// object per line (JSON.stringify never writes a raw newline), sealed with the key ring. A worker
// splits the lines and joins them into batch bodies without parsing a single event.
import type { KeyRing } from '../store/crypto.js'
import type { SealedSecret } from '../store/store.js'
import { actions, type ActionName } from '../segment/actions.js'
import type { UpstreamRequest } from '../segment/build.js'

type Json = Record<string, unknown>

/** Associated data for a delivery's events: copied into another row, they fail to open. */
export function deliveryAad (workspaceId: string, connectionId: string, deliveryId: string): string {
  return `segment-forwarder/delivery-events/v1\0${workspaceId}\0${connectionId}\0${deliveryId}`
}

/**
 * The events of a built (validated, measured) action as batch items: each single call gets its
 * `type`; a batch's top-level context and integrations are merged into its items (an item's own
 * keys win), as Segment would, so they reach no one else's events when joined; an event without
 * `timestamp` gets the acceptance time. The body is rendered by build.ts, so messageIds and our
 * context.library are exactly what a sync call would send.
 */
export function queuedItems (action: ActionName, upstream: UpstreamRequest, acceptedAt: Date): string[] {
  const body = JSON.parse(upstream.render(acceptedAt).toString('utf8')) as Json
  const timestamp = acceptedAt.toISOString()
  if (action !== 'batch-send') {
    // An OAuth source's writeKey is the request's, not the event's: the worker adds it to each body.
    const { sentAt: _sentAt, writeKey: _writeKey, ...event } = body
    const item: Json = { type: actions[action].type, ...event }
    item.timestamp ??= timestamp
    return [JSON.stringify(item)]
  }
  const { batch, context, integrations } = body as { batch: Json[], context?: Json, integrations?: Json }
  return batch.map((event) => {
    const item: Json = { ...event }
    if (context !== undefined) item.context = { ...context, ...(event.context as Json | undefined) }
    if (integrations !== undefined) item.integrations = { ...integrations, ...(event.integrations as Json | undefined) }
    item.timestamp ??= timestamp
    return JSON.stringify(item)
  })
}

export function sealItems (ring: KeyRing, items: string[], aad: string): SealedSecret {
  return ring.seal(items.join('\n'), aad)
}

export function openItems (ring: KeyRing, payload: SealedSecret, aad: string): string[] {
  return ring.open(payload, aad).split('\n')
}
