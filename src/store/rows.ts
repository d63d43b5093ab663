import type { ConnectionRecord } from './store.js'

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
}

export function toConnection (row: ConnectionRow): ConnectionRecord {
  return {
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
}
