import type { Config } from '../config.js'
import type { Store } from './store.js'
import { SqliteStore } from './sqlite.js'

/** Opens (without migrating) the store that DATABASE_URL names. */
export async function openStore (database: Config['database']): Promise<Store> {
  if (database.kind === 'sqlite') return new SqliteStore(database.path)
  // Loaded on demand so the embedded default never loads the PostgreSQL driver.
  const { PostgresStore } = await import('./postgres.js')
  return new PostgresStore(database)
}
