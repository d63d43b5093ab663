import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'

export interface RunningProcess {
  child: ChildProcess
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code. */
  exited: Promise<number | null>
}

/**
 * The environment with tap's coverage recording switched off. A child that loads src/ through its
 * own tsx gets other generated code than tap's loader made for the same files, and merged into one
 * report the two collapse each such file into a single "covered" line. So children are not measured
 * (tap's process tracking, which re-adds its own variables to every spawn, honours this one).
 */
export function withoutCoverage (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
}

/** Spawns a process and collects its output; killed at teardown if still running. */
export function startProcess (t: { teardown: (fn: () => unknown) => void }, command: string, args: string[], options: { cwd?: string, env: NodeJS.ProcessEnv }): RunningProcess {
  // Its own process group, so a wrapper (npm) and the service it starts can be signalled together.
  const child = spawn(command, args, { cwd: options.cwd, env: withoutCoverage(options.env), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let out = ''
  let err = ''
  // Decoded as streams, so a character split between two chunks stays whole.
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { err += chunk })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {}
  })
  return { child, stdout: () => out, stderr: () => err, exited }
}

/** Sends a signal to the process and everything it started. */
export function signalGroup (proc: RunningProcess, signal: NodeJS.Signals): void {
  process.kill(-proc.child.pid!, signal)
}

/** Polls until `url` answers 200 or the process exits; throws with its output on failure. */
export async function waitForOk (url: string, proc: RunningProcess, timeoutMs = 60_000): Promise<Response> {
  const started = Date.now()
  let lastError: unknown
  while (Date.now() - started < timeoutMs) {
    if (proc.child.exitCode !== null) throw new Error(`process exited ${proc.child.exitCode}\n${proc.stdout()}\n${proc.stderr()}`)
    try {
      const response = await fetch(url)
      if (response.status === 200) return response
      lastError = new Error(`status ${response.status}`)
    } catch (error) {
      lastError = error
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`${url} not ready: ${String(lastError)}\n${proc.stdout()}\n${proc.stderr()}`)
}

/** Polls the process's stdout until it contains `text`; throws with its output if it exits first or after `timeoutMs`. */
export async function waitForStdout (proc: RunningProcess, text: string, timeoutMs = 10_000): Promise<void> {
  const started = Date.now()
  while (!proc.stdout().includes(text)) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      // Its last output can still be in the pipe when 'exit' comes.
      await new Promise((resolve) => setTimeout(resolve, 200))
      if (proc.stdout().includes(text)) return
      throw new Error(`process exited before "${text}" on stdout\n${proc.stdout()}\n${proc.stderr()}`)
    }
    if (Date.now() - started > timeoutMs) throw new Error(`no "${text}" on stdout within ${timeoutMs} ms\n${proc.stdout()}\n${proc.stderr()}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
