// The outbox as the rest of the service sees it. Both stores implement it over the tables of
// migration 4 (sqlite-queue.ts, postgres-queue.ts); no event is ever handled here unsealed.
import type { SealedSecret } from '../store/store.js'

export const deliveryStates = ['queued', 'delivered', 'failed'] as const
export type DeliveryState = typeof deliveryStates[number]

/** A delivery's record: what the routes show. Never an event's content. */
export interface DeliveryRecord {
  id: string
  workspaceId: string
  connectionId: string
  action: string
  state: DeliveryState
  events: number
  bytes: number
  messageIds: string[]
  attempts: number
  createdAt: string
  /** Queued: when it is due (or when the lease of the worker sending it runs out). */
  nextAttemptAt: number | null
  deliveredAt: string | null
  upstreamStatus: number | null
  error: string | null
}

export interface NewDelivery {
  id: string
  workspaceId: string
  connectionId: string
  action: string
  events: number
  bytes: number
  messageIds: string[]
  createdAt: string
  createdMs: number
  expiresMs: number
  /** When it is first due: its creation, or later while its Write Key is paced after a 429. */
  dueMs: number
  /** The events, sealed with associated data binding workspace, connection and delivery. */
  payload: SealedSecret
}

/** A delivery a worker holds: its lease token and its sealed events. */
export interface ClaimedDelivery {
  id: string
  workspaceId: string
  connectionId: string
  events: number
  /** Attempts including the one this claim is for. */
  attempts: number
  createdMs: number
  expiresMs: number
  /** Send alone: it was part of a joined request Segment refused. */
  solo: boolean
  lease: string
  payload: SealedSecret | undefined
}

export type Finish =
  | { kind: 'delivered', upstreamStatus: number, at: number }
  | { kind: 'retry', nextAttemptMs: number, upstreamStatus: number | null, error: string }
  | { kind: 'failed', upstreamStatus: number | null, error: string, at: number }
  /** Sent together with others and refused: due again at once, to be sent alone. */
  | { kind: 'isolate' }
  /** Not sent (shutdown): due again at once, the attempt not counted. */
  | { kind: 'release' }

export interface ListQuery {
  state?: DeliveryState | undefined
  limit: number
  /** Exclusive: (createdAt, id) of the last delivery of the previous page. */
  before?: { createdAt: string, id: string } | undefined
}

export interface QueueStats {
  /** Queued and failed events (delivered ones are counted by the deliveries_total counter instead: summing days of records on every scrape would cost too much). */
  events: { queued: number, failed: number }
  /** Queued events held by a worker right now. */
  inFlight: number
  /** createdMs of the oldest queued delivery, or null. */
  oldestQueuedMs: number | null
}

export interface QueueStore {
  /**
   * Commits the delivery and its events unless the workspace would then hold more than
   * `maxQueuedEvents` queued events; false (and nothing stored) when it would.
   */
  enqueue: (delivery: NewDelivery, maxQueuedEvents: number) => Promise<boolean>
  /**
   * Takes the oldest due delivery and up to `limit` due deliveries of the same connection, leased
   * until `now + leaseMs` (their next_attempt_ms). Concurrent claimers never get the same one.
   * Connections in `skipConnections` (paced after a 429) are passed over.
   */
  claim: (now: number, leaseMs: number, limit: number, skipConnections?: string[]) => Promise<ClaimedDelivery[]>
  /** Applies each outcome to a delivery still held under its lease; one whose lease was lost is left alone. */
  finish: (outcomes: Array<{ id: string, lease: string, finish: Finish }>) => Promise<void>
  /** After a 429: none of the connection's idle queued deliveries is due before `untilMs`. */
  pace: (connectionId: string, now: number, untilMs: number) => Promise<void>

  get: (connectionId: string, id: string) => Promise<DeliveryRecord | undefined>
  list: (connectionId: string, query: ListQuery) => Promise<DeliveryRecord[]>
  /** A failed delivery queued again, due `now`, with a new maximum age; undefined when none failed by that id. */
  retry: (connectionId: string, id: string, now: number, expiresMs: number) => Promise<DeliveryRecord | undefined>
  retryAllFailed: (connectionId: string, now: number, expiresMs: number) => Promise<number>
  /** Deletes a queued or failed delivery and its events; false when there is none such. */
  discard: (connectionId: string, id: string) => Promise<boolean>
  /** Queued deliveries of the connection. */
  pending: (connectionId: string) => Promise<number>
  discardConnection: (connectionId: string) => Promise<void>
  /** Deletes delivered records finished before `beforeMs`. */
  purgeDelivered: (beforeMs: number) => Promise<number>
  stats: (now: number) => Promise<QueueStats>

  /** Sealed payloads for rewrap, ordered by delivery id, after `afterId`. */
  listSealedEvents: (afterId: string, limit: number) => Promise<Array<{ id: string, workspaceId: string, connectionId: string, payload: SealedSecret }>>
  swapSealedEvents: (id: string, expected: SealedSecret, next: SealedSecret) => Promise<boolean>
}

/** enqueue(): the connection was deleted meanwhile (answered as connection_not_found). */
export class ConnectionGoneError extends Error {
  constructor () {
    super('the connection was deleted')
    this.name = 'ConnectionGoneError'
  }
}

/** The columns both stores read from `deliveries` for a record. */
export const RECORD_COLUMNS = 'id, workspace_id, connection_id, action, state, events, bytes, message_ids, attempts, created_at, next_attempt_ms, delivered_at, upstream_status, error'

export interface DeliveryRow {
  id: string
  workspace_id: string
  connection_id: string
  action: string
  state: DeliveryState
  events: number
  bytes: number
  message_ids: string
  attempts: number
  created_at: string
  next_attempt_ms: number | string
  delivered_at: string | null
  upstream_status: number | null
  error: string | null
}

export function toDeliveryRecord (row: DeliveryRow): DeliveryRecord {
  return {
    id: row.id,
    workspaceId: row.workspace_id,
    connectionId: row.connection_id,
    action: row.action,
    state: row.state,
    events: row.events,
    bytes: row.bytes,
    messageIds: JSON.parse(row.message_ids) as string[],
    attempts: row.attempts,
    createdAt: row.created_at,
    nextAttemptAt: row.state === 'queued' ? Number(row.next_attempt_ms) : null,
    deliveredAt: row.delivered_at,
    upstreamStatus: row.upstream_status,
    error: row.error
  }
}

export interface ClaimRow {
  id: string
  workspace_id: string
  connection_id: string
  events: number
  attempts: number
  created_ms: number | string
  expires_ms: number | string
  solo: number
  lease: string
  key_id: string | null
  sealed: Buffer | null
}

export function toClaimed (row: ClaimRow): ClaimedDelivery {
  return {
    id: row.id,
    workspaceId: row.workspace_id,
    connectionId: row.connection_id,
    events: row.events,
    attempts: row.attempts,
    createdMs: Number(row.created_ms),
    expiresMs: Number(row.expires_ms),
    solo: row.solo === 1,
    lease: row.lease,
    payload: row.key_id === null || row.sealed === null ? undefined : { kid: row.key_id, sealed: row.sealed }
  }
}
