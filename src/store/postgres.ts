import pg from 'pg'
import type { PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg'
import type { Config } from '../config.js'
import { migrations } from './migrations.js'
import { PostgresQueue } from '../delivery/postgres-queue.js'
import { CONNECTION_COLUMNS, oauthValues, toConnection, toTokenWithConnection, tokenWithConnectionSql, type ConnectionRow, type TokenWithConnectionRow } from './rows.js'
import { StoreUnavailableError } from './store.js'
import type { ConnectionPatch, ConnectionRecord, IdempotencyClaim, IdempotencyKeyId, OAuthRecord, SealedRow, SealedSecret, Store, TokenRecord, TokenWithConnection, WorkspaceRecord } from './store.js'

type PostgresConfig = Extract<Config['database'], { kind: 'postgres' }>

const WORKSPACE_COLUMNS = 'id, name, created_at AS "createdAt"'
// The column list of SELECT, INSERT and RETURNING on `connections`.
const CONNECTION_COLUMN_LIST = CONNECTION_COLUMNS.join(', ')
// Built once: pg compares a named statement's text with the one it prepared on every call.
const TOKEN_WITH_CONNECTION_SQL = tokenWithConnectionSql('$1', '$2')
const IDEMPOTENCY_KEY = 'workspace_id = $1 AND connection_id = $2 AND action = $3 AND key_hash = $4'
// A claim that finds a row which then disappears (its owner released it) looks again, this often.
const CLAIM_ROUNDS = 3
// Every replica uses this key, so only one of them migrates at a time.
const MIGRATION_LOCK_KEY = '7526340958120936201'
// Waiting for another replica's migration may take longer than one request may.
const MIGRATION_TIMEOUT_MS = 120_000
// The server cancels a slow statement first (the connection stays usable); the client-side read
// timeout only fires when the server does not answer at all.
const READ_TIMEOUT_SLACK_MS = 1000

// SQLSTATEs that mean the server cannot serve us right now, rather than that the query is wrong.
const UNAVAILABLE_STATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '57014' // query_canceled: our statement_timeout
])
const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])
// node-postgres reports these without a code.
const UNAVAILABLE_MESSAGES = new Set([
  'Connection terminated',
  'Connection terminated unexpectedly',
  'Connection terminated due to connection timeout',
  'timeout exceeded when trying to connect',
  'Query read timeout',
  'Client has encountered a connection error and is not queryable'
])

function isUnavailable (error: unknown): boolean {
  for (let e = error; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && (code.startsWith('08') || UNAVAILABLE_STATES.has(code) || UNAVAILABLE_ERRNOS.has(code))) return true
    if (UNAVAILABLE_MESSAGES.has(e.message)) return true
    if (e instanceof AggregateError && e.errors.some(isUnavailable)) return true
  }
  return false
}

/** Errors the server reported on a healthy connection leave it reusable; anything else may not. */
function leavesConnectionUsable (error: unknown): boolean {
  const code = (error as { code?: unknown }).code
  return error instanceof pg.DatabaseError && typeof code === 'string' && !code.startsWith('08') && !code.startsWith('57P')
}

function translate (error: unknown): unknown {
  return isUnavailable(error) ? new StoreUnavailableError('the PostgreSQL database is unavailable', { cause: error }) : error
}

/**
 * PostgreSQL text cannot hold NUL, so no stored id contains one, and a query that binds one fails
 * (22021) instead of matching nothing. Ids come from request paths: such an id is simply unknown.
 */
function impossibleId (...ids: string[]): boolean {
  return ids.some((id) => id.includes('\u0000'))
}

// A checked-out client emits 'error' when its connection drops; the pending query already
// rejects with it, so this listener only keeps the event from crashing the process.
function ignore (): void {}

/** The shared store for several replicas: a pg connection pool. */
export class PostgresStore implements Store {
  readonly kind = 'postgres'
  readonly #pool: pg.Pool
  #closed = false
  readonly queue = new PostgresQueue({
    query: async (query) => await this.#query(query),
    transaction: async (work) => await this.#transaction(work)
  })

  constructor (database: PostgresConfig) {
    this.#pool = new pg.Pool({
      connectionString: database.url,
      max: database.poolSize,
      connectionTimeoutMillis: database.timeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: database.timeoutMs,
      query_timeout: database.timeoutMs + READ_TIMEOUT_SLACK_MS,
      application_name: 'segment-forwarder',
      keepAlive: true
    })
    // An idle client whose connection dropped: the pool has already discarded it, and the next
    // query that needs the database reports the outage.
    this.#pool.on('error', ignore)
  }

  async #checkout (): Promise<PoolClient> {
    try {
      const client = await this.#pool.connect()
      client.on('error', ignore)
      return client
    } catch (error) {
      throw translate(error)
    }
  }

  #checkin (client: PoolClient, error?: unknown): void {
    client.off('error', ignore)
    // Releasing with an error destroys the client, so the pool reconnects instead of reusing it.
    client.release(error === undefined || leavesConnectionUsable(error) ? undefined : error as Error)
  }

  async #query<R extends QueryResultRow> (query: QueryConfig): Promise<QueryResult<R>> {
    const client = await this.#checkout()
    try {
      const result = await client.query<R>(query)
      this.#checkin(client)
      return result
    } catch (error) {
      this.#checkin(client, error)
      throw translate(error)
    }
  }

  // Queued delivery (src/delivery/postgres-queue.ts) runs its multi-statement writes here.
  async #transaction<T> (work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#checkout()
    try {
      await client.query('BEGIN')
      const result = await work(client)
      await client.query('COMMIT')
      this.#checkin(client)
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(ignore)
      this.#checkin(client, error)
      throw translate(error)
    }
  }

  async migrate (): Promise<void> {
    const client = await this.#checkout()
    const run = async (text: string, values?: unknown[]): Promise<QueryResult> =>
      await client.query({ text, values, query_timeout: MIGRATION_TIMEOUT_MS + READ_TIMEOUT_SLACK_MS } as QueryConfig)
    try {
      await run(`SET statement_timeout = ${MIGRATION_TIMEOUT_MS}`)
      // A session lock serializes replicas starting together, including the CREATE TABLE IF NOT
      // EXISTS below, which is not safe to run concurrently in PostgreSQL.
      await run(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`)
      await run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)')
      const applied = new Set((await run('SELECT version FROM schema_migrations')).rows.map((r: { version: number }) => r.version))
      for (const migration of migrations) {
        if (applied.has(migration.version)) continue
        await run('BEGIN')
        try {
          for (const statement of migration.statements) await run((typeof statement === 'string' ? statement : statement.postgres).replaceAll('{blob}', 'BYTEA'))
          await run('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [migration.version, migration.name, new Date().toISOString()])
          await run('COMMIT')
        } catch (error) {
          await run('ROLLBACK').catch(ignore)
          throw error
        }
      }
    } catch (error) {
      throw translate(error)
    } finally {
      // Destroyed rather than returned: ending the session releases the lock and drops the
      // session's statement_timeout, whatever state the connection is in.
      client.off('error', ignore)
      client.release(true)
    }
  }

  async ping (): Promise<void> {
    await this.#query({ name: 'ping', text: 'SELECT 1' })
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#pool.end()
  }

  async createWorkspace (workspace: WorkspaceRecord): Promise<void> {
    await this.#query({
      text: 'INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)',
      values: [workspace.id, workspace.name, workspace.createdAt]
    })
  }

  // COLLATE "C" orders ids by byte, as SQLite does, whatever the database's collation.
  async listWorkspaces (): Promise<WorkspaceRecord[]> {
    return (await this.#query<WorkspaceRecord>({ text: `SELECT ${WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at COLLATE "C", id COLLATE "C"` })).rows
  }

  async getWorkspace (id: string): Promise<WorkspaceRecord | undefined> {
    if (impossibleId(id)) return undefined
    return (await this.#query<WorkspaceRecord>({ text: `SELECT ${WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1`, values: [id] })).rows[0]
  }

  async createToken (token: TokenRecord): Promise<void> {
    await this.#query({
      text: 'INSERT INTO api_tokens (id, workspace_id, hash, created_at) VALUES ($1, $2, $3, $4)',
      values: [token.id, token.workspaceId, token.hash, token.createdAt]
    })
  }

  async findToken (hash: string): Promise<TokenRecord | undefined> {
    const result = await this.#query<TokenRecord>({
      name: 'find-token',
      text: 'SELECT id, workspace_id AS "workspaceId", hash, created_at AS "createdAt" FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL',
      values: [hash]
    })
    return result.rows[0]
  }

  async findTokenWithConnection (hash: string, connectionId: string): Promise<TokenWithConnection | undefined> {
    // An id PostgreSQL cannot hold names no connection; the token alone is still checked.
    const result = await this.#query<TokenWithConnectionRow>({
      name: 'find-token-with-connection',
      text: TOKEN_WITH_CONNECTION_SQL,
      values: [hash, impossibleId(connectionId) ? '' : connectionId]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toTokenWithConnection(row)
  }

  async revokeToken (workspaceId: string, tokenId: string, revokedAt: string): Promise<boolean> {
    if (impossibleId(workspaceId, tokenId)) return false
    const result = await this.#query({
      text: 'UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND workspace_id = $3 AND revoked_at IS NULL',
      values: [revokedAt, tokenId, workspaceId]
    })
    return result.rowCount === 1
  }

  async createConnection (c: ConnectionRecord): Promise<void> {
    await this.#query({
      text: `INSERT INTO connections (${CONNECTION_COLUMN_LIST}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
      values: [c.id, c.workspaceId, c.name, c.region, c.endpoint, c.writeKeyHint, c.secret.kid, c.secret.sealed, c.createdAt, c.updatedAt, ...oauthValues(c.oauth)]
    })
  }

  async listConnections (workspaceId: string): Promise<ConnectionRecord[]> {
    const result = await this.#query<ConnectionRow>({
      name: 'list-connections',
      text: `SELECT ${CONNECTION_COLUMN_LIST} FROM connections WHERE workspace_id = $1 ORDER BY created_at COLLATE "C", id COLLATE "C"`,
      values: [workspaceId]
    })
    return result.rows.map(toConnection)
  }

  async getConnection (workspaceId: string, id: string): Promise<ConnectionRecord | undefined> {
    if (impossibleId(id)) return undefined
    const result = await this.#query<ConnectionRow>({
      name: 'get-connection',
      text: `SELECT ${CONNECTION_COLUMN_LIST} FROM connections WHERE id = $1 AND workspace_id = $2`,
      values: [id, workspaceId]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toConnection(row)
  }

  async updateConnection (workspaceId: string, id: string, patch: ConnectionPatch, updatedAt: string): Promise<ConnectionRecord | undefined> {
    if (impossibleId(id)) return undefined
    const result = await this.#query<ConnectionRow>({
      text: `UPDATE connections SET
          name = coalesce($3, name),
          region = coalesce($4, region),
          endpoint = CASE WHEN $5::boolean THEN $6 ELSE endpoint END,
          updated_at = $7
        WHERE id = $1 AND workspace_id = $2 RETURNING ${CONNECTION_COLUMN_LIST}`,
      values: [id, workspaceId, patch.name ?? null, patch.region ?? null, patch.endpoint !== undefined, patch.endpoint ?? null, updatedAt]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toConnection(row)
  }

  async replaceWriteKey (workspaceId: string, id: string, secret: SealedSecret, writeKeyHint: string, updatedAt: string): Promise<ConnectionRecord | undefined> {
    if (impossibleId(id)) return undefined
    const result = await this.#query<ConnectionRow>({
      text: `UPDATE connections SET key_id = $1, write_key_sealed = $2, write_key_hint = $3, updated_at = $4
        WHERE id = $5 AND workspace_id = $6 RETURNING ${CONNECTION_COLUMN_LIST}`,
      values: [secret.kid, secret.sealed, writeKeyHint, updatedAt, id, workspaceId]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toConnection(row)
  }

  async deleteConnection (workspaceId: string, id: string): Promise<boolean> {
    if (impossibleId(id)) return false
    const result = await this.#query({ text: 'DELETE FROM connections WHERE id = $1 AND workspace_id = $2', values: [id, workspaceId] })
    return result.rowCount === 1
  }

  async replaceOAuth (workspaceId: string, id: string, oauth: OAuthRecord | null, updatedAt: string): Promise<ConnectionRecord | undefined> {
    if (impossibleId(id)) return undefined
    const result = await this.#query<ConnectionRow>({
      text: `UPDATE connections SET oauth_client_id = $1, oauth_key_id = $2, oauth_auth_server = $3,
          oauth_private_key_kid = $4, oauth_private_key_sealed = $5, updated_at = $6
        WHERE id = $7 AND workspace_id = $8 RETURNING ${CONNECTION_COLUMN_LIST}`,
      values: [...oauthValues(oauth), updatedAt, id, workspaceId]
    })
    const row = result.rows[0]
    return row === undefined ? undefined : toConnection(row)
  }

  // Paging needs only `>` and ORDER BY to agree; with the column's own collation both do, and
  // the primary key index serves each page.
  async listSealed (afterId: string, limit: number): Promise<SealedRow[]> {
    const result = await this.#query<Pick<ConnectionRow, 'id' | 'workspace_id' | 'key_id' | 'write_key_sealed'>>({
      text: 'SELECT id, workspace_id, key_id, write_key_sealed FROM connections WHERE id > $1 ORDER BY id LIMIT $2',
      values: [afterId, limit]
    })
    return result.rows.map((row) => ({ id: row.id, workspaceId: row.workspace_id, secret: { kid: row.key_id, sealed: row.write_key_sealed } }))
  }

  async keyIdsInUse (): Promise<string[]> {
    const result = await this.#query<{ key_id: string }>({ text: 'SELECT DISTINCT key_id FROM connections', values: [] })
    return result.rows.map((row) => row.key_id)
  }

  async swapSealed (id: string, expected: SealedSecret, next: SealedSecret): Promise<boolean> {
    const result = await this.#query({
      text: 'UPDATE connections SET key_id = $1, write_key_sealed = $2 WHERE id = $3 AND key_id = $4 AND write_key_sealed = $5',
      values: [next.kid, next.sealed, id, expected.kid, expected.sealed]
    })
    return result.rowCount === 1
  }

  async claimIdempotencyKey (id: IdempotencyKeyId, fingerprint: string, owner: string, now: number, leaseUntil: number): Promise<IdempotencyClaim> {
    const key = [id.workspaceId, id.connectionId, id.action, id.keyHash]
    for (let round = 1; ; round++) {
      // One statement: a new key inserts; an expired row (done past its 24 hours, or running past
      // the lease of a replica that died) is taken over; a live row is left alone and returns
      // nothing. Concurrent claims of one key serialise on the row, so exactly one wins.
      const claimed = await this.#query({
        name: 'claim-idempotency-key',
        text: `INSERT INTO idempotency_keys AS k (workspace_id, connection_id, action, key_hash, fingerprint, state, owner, answer, expires_at)
          VALUES ($1, $2, $3, $4, $5, 'running', $6, NULL, $7)
          ON CONFLICT (workspace_id, connection_id, action, key_hash) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, state = 'running', owner = EXCLUDED.owner, answer = NULL, expires_at = EXCLUDED.expires_at
            WHERE k.expires_at <= $8
          RETURNING owner`,
        values: [...key, fingerprint, owner, leaseUntil, now]
      })
      if (claimed.rowCount === 1) return { claimed: true }
      const result = await this.#query<{ fingerprint: string, state: 'running' | 'done', answer: string | null, expires_at: string }>({
        name: 'read-idempotency-key',
        text: `SELECT fingerprint, state, answer, expires_at FROM idempotency_keys WHERE ${IDEMPOTENCY_KEY}`,
        values: key
      })
      const row = result.rows[0]
      // Gone (released) or expired since the INSERT looked: claim again.
      if (row === undefined || Number(row.expires_at) <= now) {
        if (round < CLAIM_ROUNDS) continue
        return { claimed: false, state: 'running', fingerprint }
      }
      return row.state === 'done'
        ? { claimed: false, state: 'done', fingerprint: row.fingerprint, answer: row.answer ?? '' }
        : { claimed: false, state: 'running', fingerprint: row.fingerprint }
    }
  }

  async completeIdempotencyKey (id: IdempotencyKeyId, owner: string, answer: string, expiresAt: number): Promise<boolean> {
    const result = await this.#query({
      name: 'complete-idempotency-key',
      text: `UPDATE idempotency_keys SET state = 'done', answer = $6, expires_at = $7 WHERE ${IDEMPOTENCY_KEY} AND owner = $5 AND state = 'running'`,
      values: [id.workspaceId, id.connectionId, id.action, id.keyHash, owner, answer, expiresAt]
    })
    return result.rowCount === 1
  }

  async listSealedOAuth (afterId: string, limit: number): Promise<SealedRow[]> {
    const result = await this.#query<{ id: string, workspace_id: string, oauth_private_key_kid: string, oauth_private_key_sealed: Buffer }>({
      text: `SELECT id, workspace_id, oauth_private_key_kid, oauth_private_key_sealed FROM connections
        WHERE id > $1 AND oauth_private_key_sealed IS NOT NULL ORDER BY id LIMIT $2`,
      values: [afterId, limit]
    })
    return result.rows.map((row) => ({ id: row.id, workspaceId: row.workspace_id, secret: { kid: row.oauth_private_key_kid, sealed: row.oauth_private_key_sealed } }))
  }

  async swapSealedOAuth (id: string, expected: SealedSecret, next: SealedSecret): Promise<boolean> {
    const result = await this.#query({
      text: `UPDATE connections SET oauth_private_key_kid = $1, oauth_private_key_sealed = $2
        WHERE id = $3 AND oauth_private_key_kid = $4 AND oauth_private_key_sealed = $5`,
      values: [next.kid, next.sealed, id, expected.kid, expected.sealed]
    })
    return result.rowCount === 1
  }

  async releaseIdempotencyKey (id: IdempotencyKeyId, owner: string): Promise<boolean> {
    const result = await this.#query({
      name: 'release-idempotency-key',
      text: `DELETE FROM idempotency_keys WHERE ${IDEMPOTENCY_KEY} AND owner = $5 AND state = 'running'`,
      values: [id.workspaceId, id.connectionId, id.action, id.keyHash, owner]
    })
    return result.rowCount === 1
  }

  // SKIP LOCKED: replicas purging at once, or a claim holding a row, never make a purge wait.
  async purgeIdempotencyKeys (now: number, limit: number): Promise<number> {
    const result = await this.#query({
      name: 'purge-idempotency-keys',
      text: `DELETE FROM idempotency_keys WHERE ctid IN
          (SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      values: [now, limit]
    })
    return result.rowCount ?? 0
  }

  async getMeta (key: string): Promise<SealedSecret | undefined> {
    const result = await this.#query<{ key_id: string, sealed: Buffer }>({ text: 'SELECT key_id, sealed FROM meta WHERE key = $1', values: [key] })
    const row = result.rows[0]
    return row === undefined ? undefined : { kid: row.key_id, sealed: row.sealed }
  }

  async setMeta (key: string, value: SealedSecret, expected?: SealedSecret): Promise<boolean> {
    const result = expected === undefined
      ? await this.#query({
        text: 'INSERT INTO meta (key, key_id, sealed) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING',
        values: [key, value.kid, value.sealed]
      })
      : await this.#query({
        text: 'UPDATE meta SET key_id = $1, sealed = $2 WHERE key = $3 AND key_id = $4 AND sealed = $5',
        values: [value.kid, value.sealed, key, expected.kid, expected.sealed]
      })
    return result.rowCount === 1
  }
}
