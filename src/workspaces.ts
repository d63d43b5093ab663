import { Type, type Static } from '@sinclair/typebox'
import { storableText } from './connections.js'
import { newId } from './ids.js'
import { generateToken, hashToken } from './tokens.js'
import type { Store, WorkspaceRecord } from './store/store.js'

export const TokenValue = Type.String({ description: 'Shown once; only its SHA-256 hash is stored. Starts with sfw_ so secret scanners find it.', examples: ['sfw_2Yv9kQ4mXc7RtB1nLp8wZs0dHf3jGa6eUo5iKy9x1B2c3D'] })

/** A token as issued (POST /v1/admin/workspaces/{workspaceId}/tokens, `token create`). */
export const IssuedTokenSchema = Type.Object({
  id: Type.String({ examples: ['tok_9sLq2mVb7XcR4nT1kP8wZd'] }),
  token: TokenValue,
  createdAt: Type.String({ format: 'date-time', examples: ['2026-11-28T12:00:00.000Z'] })
}, {
  title: 'IssuedToken',
  examples: [{ id: 'tok_9sLq2mVb7XcR4nT1kP8wZd', token: 'sfw_2Yv9kQ4mXc7RtB1nLp8wZs0dHf3jGa6eUo5iKy9x1B2c3D', createdAt: '2026-11-28T12:00:00.000Z' }]
})

export type IssuedToken = Static<typeof IssuedTokenSchema>

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
