// The store interface. SQL and driver details stay inside the implementations (sqlite.ts,
// postgres.ts); the rest of the service sees only these records and methods.

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

export interface ConnectionRecord {
  id: string
  workspaceId: string
  name: string
  region: 'us' | 'eu'
  endpoint: string | null
  writeKeyHint: string
  secret: SealedSecret
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

  /** Every connection's sealed secret, ordered by id, after `afterId`, at most `limit`; for rewrap. */
  listSealed: (afterId: string, limit: number) => Promise<SealedRow[]>
  /** The distinct key ids the stored Write Keys are sealed under. */
  keyIdsInUse: () => Promise<string[]>
  /** Compare-and-set: replaces the secret only if it is still `expected`; false when it changed meanwhile. */
  swapSealed: (id: string, expected: SealedSecret, next: SealedSecret) => Promise<boolean>

  getMeta: (key: string) => Promise<SealedSecret | undefined>
  setMeta: (key: string, value: SealedSecret, expected?: SealedSecret) => Promise<boolean>
}

/** The store cannot be reached (database down, pool exhausted); answered as a coded 503. */
export class StoreUnavailableError extends Error {
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'StoreUnavailableError'
  }
}
