import { storableText } from './connections.js'
import { newId } from './ids.js'
import { generateToken, hashToken } from './tokens.js'
import type { Store, WorkspaceRecord } from './store/store.js'

export interface IssuedToken {
  id: string
  /** Shown once: only its hash is stored. */
  token: string
  createdAt: string
}

export async function createWorkspace (store: Store, name: string): Promise<WorkspaceRecord & { token: IssuedToken }> {
  const workspace: WorkspaceRecord = { id: newId('ws'), name: storableText(name), createdAt: new Date().toISOString() }
  await store.createWorkspace(workspace)
  const token = await issueToken(store, workspace.id)
  return { ...workspace, token }
}

/** Undefined when the workspace does not exist. */
export async function createToken (store: Store, workspaceId: string): Promise<IssuedToken | undefined> {
  if (await store.getWorkspace(workspaceId) === undefined) return undefined
  return await issueToken(store, workspaceId)
}

async function issueToken (store: Store, workspaceId: string): Promise<IssuedToken> {
  const token = generateToken()
  const record = { id: newId('tok'), workspaceId, hash: hashToken(token), createdAt: new Date().toISOString() }
  await store.createToken(record)
  return { id: record.id, token, createdAt: record.createdAt }
}
