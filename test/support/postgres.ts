import { randomBytes } from 'node:crypto'
import pg from 'pg'

/** The subset of tap's Test that the helper uses. */
export interface TeardownContext {
  teardown: (fn: () => unknown) => void
}

async function onServer<T> (serverUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

/**
 * Why the PostgreSQL tests cannot run here, for tap's `skip` option; false when PG_URL names a
 * server. The test command sets PG_URL, or PG_UNAVAILABLE when it could start no server.
 */
export const postgresSkip: string | false = process.env.PG_URL !== undefined && process.env.PG_URL !== ''
  ? false
  : process.env.PG_UNAVAILABLE ?? 'PG_URL is not set: run the tests through `npm test`, which starts a throwaway PostgreSQL, or set PG_URL=postgres://user@host:port/db to a server that may create databases'

/**
 * A new, empty database on the server that PG_URL names, dropped at teardown, so every test has
 * its own schema and no test sees another's rows.
 */
export async function freshPostgresUrl (t: TeardownContext): Promise<string> {
  const serverUrl = process.env.PG_URL
  if (serverUrl === undefined || serverUrl === '') {
    throw new Error('PG_URL is not set: run the tests through `tsx test/support/with-postgres.ts <command>`, ' +
      'which starts a throwaway PostgreSQL, or set PG_URL=postgres://user@host:port/db to a server that may create databases')
  }
  const name = `sf_test_${process.pid}_${randomBytes(6).toString('hex')}`
  await onServer(serverUrl, async (client) => await client.query(`CREATE DATABASE ${name}`))
  t.teardown(async () => {
    // FORCE (PostgreSQL 13+) ends sessions a test left open, such as a store it did not close.
    await onServer(serverUrl, async (client) => await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  })
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return url.toString()
}
