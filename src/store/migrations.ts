// Versioned schema, one entry per version, applied in order and never edited once shipped.
// Both stores use the same statements: the types used are valid in SQLite and PostgreSQL except
// the binary column, which each store names itself (`{blob}`).
export const migrations: ReadonlyArray<{ version: number, name: string, statements: string[] }> = [
  {
    version: 1,
    name: 'workspaces, tokens, connections, meta',
    statements: [
      `CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`,
      `CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
        hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
      )`,
      'CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id)',
      `CREATE TABLE connections (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        endpoint TEXT,
        write_key_hint TEXT NOT NULL,
        key_id TEXT NOT NULL,
        write_key_sealed {blob} NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      )`,
      'CREATE INDEX connections_workspace ON connections (workspace_id, created_at)',
      `CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        sealed {blob} NOT NULL
      )`
    ]
  },
  {
    version: 2,
    name: 'idempotency keys',
    // One row per Idempotency-Key of a workspace, connection and action. The key itself is kept
    // only as a hash and the body only as a fingerprint; `answer` holds numbers only (see
    // idempotency.ts). `expires_at` (epoch ms) is the lease of a running request, or the end of
    // the 24 hours a finished one is remembered; its index serves the bounded purge.
    statements: [
      `CREATE TABLE idempotency_keys (
        workspace_id TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        action TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        answer TEXT,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, connection_id, action, key_hash)
      )`,
      'CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at)'
    ]
  },
  {
    // OAuth sources. All null on a Write Key connection;
    // the private key sealed like the Write Key, under its own key id column so rewrap can swap it.
    version: 3,
    name: 'connections: OAuth credentials',
    statements: [
      'ALTER TABLE connections ADD COLUMN oauth_client_id TEXT',
      'ALTER TABLE connections ADD COLUMN oauth_key_id TEXT',
      'ALTER TABLE connections ADD COLUMN oauth_auth_server TEXT',
      'ALTER TABLE connections ADD COLUMN oauth_private_key_kid TEXT',
      'ALTER TABLE connections ADD COLUMN oauth_private_key_sealed {blob}'
    ]
  }
]
