import type { PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { SealedSecret } from '../store/store.js'
import {
  ConnectionGoneError, RECORD_COLUMNS, toClaimed, toDeliveryRecord,
  type ClaimRow, type DeliveryRecord, type DeliveryRow, type Finish, type ListQuery, type NewDelivery, type QueueStats, type QueueStore
} from './queue-store.js'
import { randomBase62 } from '../ids.js'

export interface PostgresAccess {
  query: <R extends QueryResultRow>(query: QueryConfig) => Promise<QueryResult<R>>
  /** Runs `work` inside BEGIN/COMMIT on one pooled client (ROLLBACK when it throws). */
  transaction: <T>(work: (client: PoolClient) => Promise<T>) => Promise<T>
}

// Every replica claims with one statement: the oldest due delivery's connection, then that
// connection's due deliveries, each row locked FOR UPDATE SKIP LOCKED so two replicas claiming at
// once take disjoint sets, and leased by moving next_attempt_ms to the lease's end. A row another
// replica claimed after our snapshot is re-checked under its lock (READ COMMITTED), finds itself
// no longer due, and is left out. The payload is joined in the same round trip.
const CLAIM_SQL = `WITH pick AS (
    SELECT connection_id FROM deliveries WHERE state = 'queued' AND next_attempt_ms <= $1 AND NOT (connection_id = ANY ($5::text[]))
    ORDER BY next_attempt_ms LIMIT 1 FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE deliveries d SET lease = $2, next_attempt_ms = $3, attempts = d.attempts + 1
    WHERE d.id IN (
      SELECT id FROM deliveries WHERE state = 'queued' AND next_attempt_ms <= $1 AND connection_id = (SELECT connection_id FROM pick)
      ORDER BY next_attempt_ms, id LIMIT $4 FOR UPDATE SKIP LOCKED
    )
    RETURNING d.id, d.workspace_id, d.connection_id, d.events, d.attempts, d.created_ms, d.expires_ms, d.solo, d.lease
  )
  SELECT c.*, e.key_id, e.sealed FROM claimed c LEFT JOIN delivery_events e ON e.delivery_id = c.id
  ORDER BY c.id`

const HELD = "id = $1 AND lease = $2 AND state = 'queued'"

/** The outbox on PostgreSQL, shared by every replica. */
export class PostgresQueue implements QueueStore {
  readonly #db: PostgresAccess

  constructor (db: PostgresAccess) {
    this.#db = db
  }

  async enqueue (d: NewDelivery, maxQueuedEvents: number): Promise<boolean> {
    return await this.#db.transaction(async (client) => {
      // Serialises the limit check of one workspace across replicas until COMMIT.
      await client.query({ name: 'queue-lock', text: "SELECT pg_advisory_xact_lock(hashtextextended('queue:' || $1, 0))", values: [d.workspaceId] })
      let inserted: QueryResult
      try {
        inserted = await client.query({
          name: 'queue-insert',
          text: `INSERT INTO deliveries (id, workspace_id, connection_id, action, state, events, bytes, message_ids, attempts, created_at, created_ms, expires_ms, next_attempt_ms, solo)
            SELECT $1::text, $2::text, $3::text, $4::text, 'queued', $5::integer, $6::integer, $7::text, 0, $8::text, $9::bigint, $10::bigint, $12::bigint, 0
            WHERE coalesce((SELECT events FROM queue_counts WHERE workspace_id = $2::text), 0) + $5::integer <= $11::bigint`,
          values: [d.id, d.workspaceId, d.connectionId, d.action, d.events, d.bytes, JSON.stringify(d.messageIds), d.createdAt, d.createdMs, d.expiresMs, maxQueuedEvents, d.dueMs]
        })
      } catch (error) {
        if ((error as { code?: string }).code === '23503') throw new ConnectionGoneError()
        throw error
      }
      if (inserted.rowCount !== 1) return false
      await client.query({ name: 'queue-insert-events', text: 'INSERT INTO delivery_events (delivery_id, key_id, sealed) VALUES ($1, $2, $3)', values: [d.id, d.payload.kid, d.payload.sealed] })
      return true
    })
  }

  async claim (now: number, leaseMs: number, limit: number, skipConnections: string[] = []) {
    const result = await this.#db.query<ClaimRow>({ name: 'queue-claim', text: CLAIM_SQL, values: [now, randomBase62(16), now + leaseMs, limit, skipConnections] })
    return result.rows.map(toClaimed)
  }

  async finish (outcomes: Array<{ id: string, lease: string, finish: Finish }>): Promise<void> {
    if (outcomes.length === 0) return
    // In id order: every multi-row writer locks deliveries in that order (see discardConnection).
    const ordered = [...outcomes].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    await this.#db.transaction(async (client) => {
      for (const { id, lease, finish } of ordered) {
        switch (finish.kind) {
          case 'delivered': {
            const result = await client.query({
              name: 'queue-delivered',
              text: `UPDATE deliveries SET state = 'delivered', lease = NULL, finished_ms = $3, delivered_at = $4, upstream_status = $5, error = NULL WHERE ${HELD}`,
              values: [id, lease, finish.at, new Date(finish.at).toISOString(), finish.upstreamStatus]
            })
            if (result.rowCount === 1) await client.query({ name: 'queue-drop-events', text: 'DELETE FROM delivery_events WHERE delivery_id = $1', values: [id] })
            break
          }
          case 'retry':
            await client.query({
              name: 'queue-retry-later',
              text: `UPDATE deliveries SET lease = NULL, next_attempt_ms = $3, upstream_status = $4, error = $5 WHERE ${HELD}`,
              values: [id, lease, finish.nextAttemptMs, finish.upstreamStatus, finish.error]
            })
            break
          case 'failed':
            await client.query({
              name: 'queue-failed',
              text: `UPDATE deliveries SET state = 'failed', lease = NULL, finished_ms = $3, upstream_status = coalesce($4, upstream_status), error = $5 WHERE ${HELD}`,
              values: [id, lease, finish.at, finish.upstreamStatus, finish.error]
            })
            break
          case 'isolate':
            await client.query({ name: 'queue-isolate', text: `UPDATE deliveries SET lease = NULL, solo = 1, next_attempt_ms = 0 WHERE ${HELD}`, values: [id, lease] })
            break
          case 'release':
            await client.query({ name: 'queue-release', text: `UPDATE deliveries SET lease = NULL, next_attempt_ms = 0, attempts = attempts - 1 WHERE ${HELD}`, values: [id, lease] })
            break
        }
      }
    })
  }

  async pace (connectionId: string, now: number, untilMs: number): Promise<void> {
    await this.#db.query({
      name: 'queue-pace',
      text: `UPDATE deliveries SET next_attempt_ms = $3
        WHERE connection_id = $1 AND state = 'queued' AND next_attempt_ms < $3 AND (lease IS NULL OR next_attempt_ms <= $2)`,
      values: [connectionId, now, untilMs]
    })
  }

  async get (connectionId: string, id: string): Promise<DeliveryRecord | undefined> {
    if (id.includes('\u0000')) return undefined
    const result = await this.#db.query<DeliveryRow>({ name: 'queue-get', text: `SELECT ${RECORD_COLUMNS} FROM deliveries WHERE id = $1 AND connection_id = $2`, values: [id, connectionId] })
    const row = result.rows[0]
    return row === undefined ? undefined : toDeliveryRecord(row)
  }

  async list (connectionId: string, query: ListQuery): Promise<DeliveryRecord[]> {
    const values: unknown[] = [connectionId, query.limit]
    const where = ['connection_id = $1']
    if (query.state !== undefined) {
      values.push(query.state)
      where.push(`state = $${values.length}`)
    }
    if (query.before !== undefined) {
      values.push(query.before.createdAt, query.before.id)
      where.push(`(created_at, id) < ($${values.length - 1}, $${values.length})`)
    }
    const result = await this.#db.query<DeliveryRow>({
      text: `SELECT ${RECORD_COLUMNS} FROM deliveries WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT $2`,
      values
    })
    return result.rows.map(toDeliveryRecord)
  }

  async retry (connectionId: string, id: string, now: number, expiresMs: number): Promise<DeliveryRecord | undefined> {
    if (id.includes('\u0000')) return undefined
    const result = await this.#db.query<DeliveryRow>({
      text: `UPDATE deliveries SET state = 'queued', next_attempt_ms = $3, expires_ms = $4, finished_ms = NULL, solo = 0, lease = NULL
        WHERE id = $1 AND connection_id = $2 AND state = 'failed' RETURNING ${RECORD_COLUMNS}`,
      values: [id, connectionId, now, expiresMs]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toDeliveryRecord(row)
  }

  async retryAllFailed (connectionId: string, now: number, expiresMs: number): Promise<number> {
    const result = await this.#db.query({
      text: `UPDATE deliveries SET state = 'queued', next_attempt_ms = $2, expires_ms = $3, finished_ms = NULL, solo = 0, lease = NULL
        WHERE connection_id = $1 AND state = 'failed'`,
      values: [connectionId, now, expiresMs]
    })
    return result.rowCount ?? 0
  }

  async discard (connectionId: string, id: string): Promise<boolean> {
    if (id.includes('\u0000')) return false
    const result = await this.#db.query({ text: "DELETE FROM deliveries WHERE id = $1 AND connection_id = $2 AND state IN ('queued', 'failed')", values: [id, connectionId] })
    return result.rowCount === 1
  }

  async pending (connectionId: string): Promise<number> {
    const result = await this.#db.query<{ n: string }>({ name: 'queue-pending', text: "SELECT count(*) AS n FROM deliveries WHERE connection_id = $1 AND state = 'queued'", values: [connectionId] })
    return Number(result.rows[0]?.n ?? 0)
  }

  async discardConnection (connectionId: string): Promise<void> {
    // Row locks in id order, as finish() takes them, so this cannot deadlock with a worker
    // recording outcomes for the same deliveries (claims skip locked rows and never wait).
    await this.#db.transaction(async (client) => {
      await client.query({ text: 'SELECT id FROM deliveries WHERE connection_id = $1 ORDER BY id FOR UPDATE', values: [connectionId] })
      await client.query({ text: 'DELETE FROM deliveries WHERE connection_id = $1', values: [connectionId] })
    })
  }

  async purgeDelivered (beforeMs: number): Promise<number> {
    const result = await this.#db.query({ text: "DELETE FROM deliveries WHERE state = 'delivered' AND finished_ms < $1", values: [beforeMs] })
    return result.rowCount ?? 0
  }

  async stats (now: number): Promise<QueueStats> {
    const result = await this.#db.query<{ queued: string, failed: string, held: string, oldest: string | null }>({
      name: 'queue-stats',
      text: `SELECT (SELECT coalesce(sum(events), 0) FROM queue_counts) AS queued,
          (SELECT coalesce(sum(events), 0) FROM deliveries WHERE state = 'failed') AS failed,
          (SELECT coalesce(sum(events), 0) FROM deliveries WHERE state = 'queued' AND next_attempt_ms > $1 AND lease IS NOT NULL) AS held,
          (SELECT min(created_ms) FROM deliveries WHERE state = 'queued') AS oldest`,
      values: [now]
    })
    const row = result.rows[0]!
    return {
      events: { queued: Number(row.queued), failed: Number(row.failed) },
      inFlight: Number(row.held),
      oldestQueuedMs: row.oldest === null ? null : Number(row.oldest)
    }
  }

  async listSealedEvents (afterId: string, limit: number) {
    const result = await this.#db.query<{ id: string, workspace_id: string, connection_id: string, key_id: string, sealed: Buffer }>({
      text: `SELECT d.id, d.workspace_id, d.connection_id, e.key_id, e.sealed FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id
        WHERE e.delivery_id > $1 ORDER BY e.delivery_id LIMIT $2`,
      values: [afterId, limit]
    })
    return result.rows.map((row) => ({ id: row.id, workspaceId: row.workspace_id, connectionId: row.connection_id, payload: { kid: row.key_id, sealed: row.sealed } }))
  }

  async swapSealedEvents (id: string, expected: SealedSecret, next: SealedSecret): Promise<boolean> {
    const result = await this.#db.query({
      text: 'UPDATE delivery_events SET key_id = $1, sealed = $2 WHERE delivery_id = $3 AND key_id = $4 AND sealed = $5',
      values: [next.kid, next.sealed, id, expected.kid, expected.sealed]
    })
    return result.rowCount === 1
  }
}
