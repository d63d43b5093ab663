import type { ConnectionRecord, OAuthRecord, TokenWithConnection } from './store.js'

/** A `connections` row as both stores read it (the column names of migrations.ts). */
export interface ConnectionRow {
  id: string
  workspace_id: string
  name: string
  region: 'us' | 'eu'
  endpoint: string | null
  write_key_hint: string
  key_id: string
  write_key_sealed: Buffer
  created_at: string
  updated_at: string
  oauth_client_id: string | null
  oauth_key_id: string | null
  oauth_auth_server: string | null
  oauth_private_key_kid: string | null
  oauth_private_key_sealed: Buffer | null
}

export function toConnection (row: ConnectionRow): ConnectionRecord {
  const record: ConnectionRecord = {
    id: row.id,
    workspaceId: row.workspace_id,
    name: row.name,
    region: row.region,
    endpoint: row.endpoint,
    writeKeyHint: row.write_key_hint,
    secret: { kid: row.key_id, sealed: row.write_key_sealed },
    createdAt: row.created_at,
    updatedAt: row.updated_at
  }
  if (row.oauth_client_id !== null && row.oauth_private_key_sealed !== null) {
    record.oauth = {
      clientId: row.oauth_client_id,
      keyId: row.oauth_key_id ?? '',
      authServer: row.oauth_auth_server,
      privateKey: { kid: row.oauth_private_key_kid ?? '', sealed: row.oauth_private_key_sealed }
    }
  }
  return record
}

/** The OAuth columns of a connection row for an INSERT or UPDATE, in CONNECTION_COLUMNS order; all null without OAuth. */
export function oauthValues (oauth: OAuthRecord | null | undefined): [string | null, string | null, string | null, string | null, Buffer | null] {
  return oauth == null
    ? [null, null, null, null, null]
    : [oauth.clientId, oauth.keyId, oauth.authServer, oauth.privateKey.kid, oauth.privateKey.sealed]
}

/** The columns of a `connections` row, in the order of migrations.ts. */
export const CONNECTION_COLUMNS = ['id', 'workspace_id', 'name', 'region', 'endpoint', 'write_key_hint', 'key_id', 'write_key_sealed', 'created_at', 'updated_at',
  'oauth_client_id', 'oauth_key_id', 'oauth_auth_server', 'oauth_private_key_kid', 'oauth_private_key_sealed'] as const

/**
 * The SELECT of `findTokenWithConnection`, the same on both stores but for the placeholders: a
 * token LEFT JOINed with the named connection of the token's own workspace, so one round trip
 * authenticates an action and finds its connection, and no other workspace's row can match.
 */
export function tokenWithConnectionSql (hashParameter: string, connectionIdParameter: string): string {
  return `SELECT t.id AS token_id, t.workspace_id AS token_workspace_id, t.hash AS token_hash, t.created_at AS token_created_at, ${CONNECTION_COLUMNS.map((column) => `c.${column}`).join(', ')}
    FROM api_tokens t LEFT JOIN connections c ON c.id = ${connectionIdParameter} AND c.workspace_id = t.workspace_id
    WHERE t.hash = ${hashParameter} AND t.revoked_at IS NULL`
}

/** A row of tokenWithConnectionSql: the connection columns are all null when none matched. */
export type TokenWithConnectionRow = {
  token_id: string
  token_workspace_id: string
  token_hash: string
  token_created_at: string
} & (ConnectionRow | { [K in keyof ConnectionRow]: null })

export function toTokenWithConnection (row: TokenWithConnectionRow): TokenWithConnection {
  return {
    token: { id: row.token_id, workspaceId: row.token_workspace_id, hash: row.token_hash, createdAt: row.token_created_at },
    connection: row.id === null ? undefined : toConnection(row as ConnectionRow)
  }
}
