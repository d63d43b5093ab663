// Versioned schema, one entry per version, applied in order and never edited once shipped.
// Both stores use the same statements: the types used are valid in SQLite and PostgreSQL except
// the binary column, which each store names itself (`{blob}`).
// A statement that differs by store (a trigger, say) is given as `{ sqlite, postgres }`.
export type MigrationStatement = string | { sqlite: string, postgres: string }

export const migrations: ReadonlyArray<{ version: number, name: string, statements: MigrationStatement[] }> = [
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
  },
  // ---- queued delivery (src/delivery/*) ----
  // The outbox. `deliveries` keeps one small row per accepted request (no event data); its events,
  // sealed with the key ring, live in `delivery_events` and are deleted as soon as they are
  // delivered, so the hot rows stay narrow and PostgreSQL's dead tuples are small. A queued row's
  // `next_attempt_ms` is both its due time and, while a worker holds it, its lease expiry: a
  // crashed worker's delivery simply becomes due again.
  {
    version: 4,
    name: 'queued delivery: deliveries and their sealed events',
    statements: [
      `CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL,
        connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
        action TEXT NOT NULL,
        state TEXT NOT NULL,
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        message_ids TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        lease TEXT,
        solo INTEGER NOT NULL,
        finished_ms BIGINT,
        delivered_at TEXT,
        upstream_status INTEGER,
        error TEXT
      )`,
      // The workers' claim: the oldest due delivery, then that connection's due ones.
      'CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE state = \'queued\'',
      'CREATE INDEX deliveries_connection_due ON deliveries (connection_id, next_attempt_ms) WHERE state = \'queued\'',
      // The deliveries routes (newest first, by state) and the delete guard.
      'CREATE INDEX deliveries_connection_created ON deliveries (connection_id, created_at, id)',
      // QUEUE_MAX_EVENTS: the queued events of each workspace, kept by triggers on every change
      // of a delivery (connection deletes cascade through them too), so the check on accept
      // reads one row instead of summing a queue that may hold a million events.
      `CREATE TABLE queue_counts (
        workspace_id TEXT PRIMARY KEY,
        events BIGINT NOT NULL
      )`,
      {
        sqlite: `CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries WHEN NEW.state = 'queued' BEGIN
          INSERT INTO queue_counts (workspace_id, events) VALUES (NEW.workspace_id, NEW.events)
            ON CONFLICT (workspace_id) DO UPDATE SET events = events + excluded.events;
        END`,
        postgres: `CREATE FUNCTION deliveries_count () RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'queued' THEN
            UPDATE queue_counts SET events = events - OLD.events WHERE workspace_id = OLD.workspace_id;
          END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'queued' THEN
            INSERT INTO queue_counts (workspace_id, events) VALUES (NEW.workspace_id, NEW.events)
              ON CONFLICT (workspace_id) DO UPDATE SET events = queue_counts.events + excluded.events;
          END IF;
          RETURN NULL;
        END $$`
      },
      {
        sqlite: `CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries WHEN (OLD.state = 'queued') <> (NEW.state = 'queued') BEGIN
          INSERT INTO queue_counts (workspace_id, events) VALUES (NEW.workspace_id, CASE WHEN NEW.state = 'queued' THEN NEW.events ELSE -OLD.events END)
            ON CONFLICT (workspace_id) DO UPDATE SET events = events + excluded.events;
        END`,
        postgres: `CREATE TRIGGER deliveries_count_insert_delete AFTER INSERT OR DELETE ON deliveries
          FOR EACH ROW EXECUTE FUNCTION deliveries_count ()`
      },
      {
        sqlite: `CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries WHEN OLD.state = 'queued' BEGIN
          UPDATE queue_counts SET events = events - OLD.events WHERE workspace_id = OLD.workspace_id;
        END`,
        postgres: `CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries
          FOR EACH ROW WHEN ((OLD.state = 'queued') IS DISTINCT FROM (NEW.state = 'queued')) EXECUTE FUNCTION deliveries_count ()`
      },
      // Metrics: the oldest queued event, and failed events (also retry-all's rows).
      'CREATE INDEX deliveries_queued_created ON deliveries (created_ms) WHERE state = \'queued\'',
      'CREATE INDEX deliveries_failed ON deliveries (connection_id) WHERE state = \'failed\'',
      // Retention of delivered records.
      'CREATE INDEX deliveries_finished ON deliveries (finished_ms) WHERE state = \'delivered\'',
      `CREATE TABLE delivery_events (
        delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
        key_id TEXT NOT NULL,
        sealed {blob} NOT NULL
      )`
    ]
  }
]
