#!/usr/bin/env node
import { stringify } from 'yaml'
import { ConfigError, loadConfig, type Config } from './config.js'
import { resolveKeyRing } from './store/key-ring.js'
import { openStore } from './store/open-store.js'
import { rewrap } from './store/rewrap.js'
import type { Store } from './store/store.js'
import { createToken, createWorkspace } from './workspaces.js'

const USAGE = `usage: segment-forwarder <command>

  serve                              run the HTTP service (npm start)
  workspace create NAME              create a workspace; prints its first token once
  token create WORKSPACE_ID          issue another token; printed once
  token revoke WORKSPACE_ID TOKEN_ID revoke a token at once
  rewrap                             re-encrypt every Write Key and OAuth private key under the first ENCRYPTION_KEYS key
  openapi [--yaml]                   print the OpenAPI document

Configuration comes from the environment; see .env.example.`

class UsageError extends Error {}

async function withStore<T> (config: Config, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(config.database)
  try {
    await store.migrate()
    return await fn(store)
  } finally {
    await store.close()
  }
}

async function main (argv: string[]): Promise<number> {
  const [command, sub, ...rest] = argv
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`)
    return command === undefined ? 2 : 0
  }
  if (command === 'openapi') {
    const { buildApp } = await import('./app.js')
    // The document depends only on the routes, so an in-memory store is enough to build it.
    const app = await buildApp(loadConfig({ DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent' }))
    await app.ready()
    const document = app.swagger()
    process.stdout.write(sub === '--yaml' ? stringify(document, { lineWidth: 0, aliasDuplicateObjects: false }) : `${JSON.stringify(document, null, 2)}\n`)
    await app.close()
    return 0
  }

  const config = loadConfig(process.env)
  switch (`${command} ${sub ?? ''}`.trim()) {
    case 'serve': {
      const { startServer } = await import('./server.js')
      await startServer(config)
      return -1
    }
    case 'workspace create': {
      const name = rest.join(' ').trim()
      if (name === '') throw new UsageError('workspace create needs a NAME')
      const created = await withStore(config, async (store) => await createWorkspace(store, name))
      process.stdout.write(`workspace ${created.id} (${created.name})\ntoken ${created.token.id}: ${created.token.token}\nThe token is shown only once; store it now.\n`)
      return 0
    }
    case 'token create': {
      const [workspaceId] = rest
      if (workspaceId === undefined) throw new UsageError('token create needs a WORKSPACE_ID')
      const issued = await withStore(config, async (store) => await createToken(store, workspaceId))
      if (issued === undefined) {
        process.stderr.write(`segment-forwarder: no workspace ${workspaceId}\n`)
        return 1
      }
      process.stdout.write(`token ${issued.id}: ${issued.token}\nThe token is shown only once; store it now.\n`)
      return 0
    }
    case 'token revoke': {
      const [workspaceId, tokenId] = rest
      if (workspaceId === undefined || tokenId === undefined) throw new UsageError('token revoke needs WORKSPACE_ID TOKEN_ID')
      const revoked = await withStore(config, async (store) => await store.revokeToken(workspaceId, tokenId, new Date().toISOString()))
      if (!revoked) {
        process.stderr.write(`segment-forwarder: no live token ${tokenId} in workspace ${workspaceId}\n`)
        return 1
      }
      process.stdout.write(`token ${tokenId} revoked\n`)
      return 0
    }
    case 'rewrap': {
      const { ring } = resolveKeyRing(config)
      const result = await withStore(config, async (store) => await rewrap(store, ring, (p) => {
        process.stderr.write(`rewrap: scanned ${p.scanned}, re-encrypted ${p.rewrapped}, changed meanwhile ${p.raced}, queued deliveries re-encrypted ${p.deliveries}, left ${p.left}\n`)
      }))
      if (result.leftRows.length > 0) {
        process.stderr.write(result.leftRows.map((row) => `rewrap: connection ${row.id} is still under its old key: ${row.reason}\n`).join(''))
        process.stdout.write(`rewrap incomplete: ${result.scanned} connections scanned, ${result.rewrapped} re-encrypted under key "${ring.primary.kid}", ${result.leftRows.length} left under another key (listed on stderr); keep the old key configured and run rewrap again\n`)
        return 1
      }
      process.stdout.write(`rewrap done: ${result.scanned} connections scanned, ${result.rewrapped} re-encrypted under key "${ring.primary.kid}"\n`)
      return 0
    }
    default:
      throw new UsageError(`unknown command: ${argv.join(' ')}`)
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exitCode = code
}, (error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`segment-forwarder: configuration error: ${error.message}\n`)
  } else if (error instanceof UsageError) {
    process.stderr.write(`segment-forwarder: ${error.message}\n\n${USAGE}\n`)
  } else {
    process.stderr.write(`segment-forwarder: ${(error as Error).message}\n`)
  }
  process.exitCode = 1
})
