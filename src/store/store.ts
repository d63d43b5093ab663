// The store interface. SQL and driver details stay inside the implementations (sqlite.ts,
// postgres.ts); the rest of the service sees only these records and methods.

import type { QueueStore } from '../delivery/queue-store.js'

export interface WorkspaceRecord {
  id: string
  name: string
  createdAt: string
}

export interface TokenRecord {
  id: string
  workspaceId: string
  /** SHA-256 of the whole token, hex. The token itself is never stored. */
  hash: string
  createdAt: string
}

/** A Write Key as stored: AES-256-GCM `nonce || ciphertext || tag` under the key `kid`. */
export interface SealedSecret {
  kid: string
  sealed: Buffer
}

/** An OAuth source's app credentials (migration 3); the private key sealed like the Write Key. */
export interface OAuthRecord {
  clientId: string
  keyId: string
  /** A custom token server (allowlisted base URL); null: the region's default. */
  authServer: string | null
  privateKey: SealedSecret
}

export interface ConnectionRecord {
  id: string
  workspaceId: string
  name: string
  region: 'us' | 'eu'
  endpoint: string | null
  writeKeyHint: string
  secret: SealedSecret
  /** Set only on OAuth sources. */
  oauth?: OAuthRecord
  createdAt: string
  updatedAt: string
}

export interface TokenWithConnection {
  token: TokenRecord
  connection: ConnectionRecord | undefined
}

export interface ConnectionPatch {
  name?: string
  region?: 'us' | 'eu'
  /** `null` removes a custom endpoint. */
  endpoint?: string | null
}

export interface SealedRow {
  id: string
  workspaceId: string
  secret: SealedSecret
}

/** Which Idempotency-Key row: keys are per workspace, connection and action; the key itself is stored only as a hash. */
export interface IdempotencyKeyId {
  workspaceId: string
  connectionId: string
  action: string
  keyHash: string
}

/**
 * What claimIdempotencyKey found. `claimed`: the caller now runs the request (no row, or only an
 * expired one: a finished key past its 24 hours, or a running one whose lease ran out because its
 * replica died). Otherwise the live row: still `running` elsewhere, or `done` with its answer.
 */
export type IdempotencyClaim =
  | { claimed: true }
  | { claimed: false, state: 'running', fingerprint: string }
  | { claimed: false, state: 'done', fingerprint: string, answer: string }

export interface Store {
  readonly kind: 'sqlite' | 'postgres'
  /** Applies pending migrations; safe to call from several replicas at once. */
  migrate: () => Promise<void>
  /** Throws when the store cannot answer. */
  ping: () => Promise<void>
  close: () => Promise<void>

  createWorkspace: (workspace: WorkspaceRecord) => Promise<void>
  listWorkspaces: () => Promise<WorkspaceRecord[]>
  getWorkspace: (id: string) => Promise<WorkspaceRecord | undefined>

  createToken: (token: TokenRecord) => Promise<void>
  /** The live (not revoked) token with this hash. */
  findToken: (hash: string) => Promise<TokenRecord | undefined>
  /**
   * An action's one read: the live token with this hash and, joined in the same query, the
   * connection `connectionId` of that token's workspace (`connection` undefined when it has none by
   * that id). Undefined when no live token has the hash.
   */
  findTokenWithConnection: (hash: string, connectionId: string) => Promise<TokenWithConnection | undefined>
  /** Returns false when no live token of that workspace has that id. */
  revokeToken: (workspaceId: string, tokenId: string, revokedAt: string) => Promise<boolean>

  createConnection: (connection: ConnectionRecord) => Promise<void>
  listConnections: (workspaceId: string) => Promise<ConnectionRecord[]>
  getConnection: (workspaceId: string, id: string) => Promise<ConnectionRecord | undefined>
  updateConnection: (workspaceId: string, id: string, patch: ConnectionPatch, updatedAt: string) => Promise<ConnectionRecord | undefined>
  replaceWriteKey: (workspaceId: string, id: string, secret: SealedSecret, writeKeyHint: string, updatedAt: string) => Promise<ConnectionRecord | undefined>
  deleteConnection: (workspaceId: string, id: string) => Promise<boolean>
  /** Sets (or, with null, removes) a connection's OAuth credentials; undefined when there is no such connection. */
  replaceOAuth: (workspaceId: string, id: string, oauth: OAuthRecord | null, updatedAt: string) => Promise<ConnectionRecord | undefined>

  /** Every connection's sealed secret, ordered by id, after `afterId`, at most `limit`; for rewrap. */
  listSealed: (afterId: string, limit: number) => Promise<SealedRow[]>
  /** The distinct key ids the stored Write Keys are sealed under. */
  keyIdsInUse: () => Promise<string[]>
  /** Compare-and-set: replaces the secret only if it is still `expected`; false when it changed meanwhile. */
  swapSealed: (id: string, expected: SealedSecret, next: SealedSecret) => Promise<boolean>

  /**
   * Atomically (on every replica) takes the key for a request when no live row holds it: writes a
   * `running` row owned by `owner` until `leaseUntil` (epoch ms). A row counts as expired when its
   * `expires_at` is at or before `now`.
   */
  claimIdempotencyKey: (id: IdempotencyKeyId, fingerprint: string, owner: string, now: number, leaseUntil: number) => Promise<IdempotencyClaim>
  /** Marks `owner`'s running row done with `answer` until `expiresAt`; false when the row is no longer its own. */
  completeIdempotencyKey: (id: IdempotencyKeyId, owner: string, answer: string, expiresAt: number) => Promise<boolean>
  /** Forgets `owner`'s running row (the request ended in an error); false when it is no longer its own. */
  releaseIdempotencyKey: (id: IdempotencyKeyId, owner: string) => Promise<boolean>
  /** Deletes at most `limit` rows expired at `now`, oldest first; returns how many. */
  purgeIdempotencyKeys: (now: number, limit: number) => Promise<number>
  /** As listSealed, for the OAuth private keys (connections without OAuth are skipped). */
  listSealedOAuth: (afterId: string, limit: number) => Promise<SealedRow[]>
  /** As swapSealed, for an OAuth private key. */
  swapSealedOAuth: (id: string, expected: SealedSecret, next: SealedSecret) => Promise<boolean>

  getMeta: (key: string) => Promise<SealedSecret | undefined>
  setMeta: (key: string, value: SealedSecret, expected?: SealedSecret) => Promise<boolean>

  /** Queued delivery's outbox (src/delivery/). */
  readonly queue: QueueStore
}

/** The store cannot be reached (database down, pool exhausted); answered as a coded 503. */
export class StoreUnavailableError extends Error {
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'StoreUnavailableError'
  }
}
