// Starts bench/child.ts (compiled) in its own process and talks to it over IPC.
import { fork, type ChildProcess } from 'node:child_process'
import { openSync } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Done, MemoryReport, ParentMessage, Ready, StatsReport } from './child.js'

export interface Running extends Ready {
  pid: number
  memory: (gc: boolean) => Promise<MemoryReport>
  /** What an upstream stand-in counted so far. */
  stats: () => Promise<Record<string, number>>
  /** Starts a CPU profile in the child; the returned function stops it and writes `file`. */
  profile: () => Promise<(file: string) => Promise<void>>
  close: () => Promise<void>
}

export interface StartOptions {
  /** Compiled child script (dist/bench/child.js). */
  script: string
  role: 'service' | 'baseline' | 'fake' | 'segment-like'
  env: Record<string, string>
  execArgv?: string[]
  /** Where the child's stdout (the service's log lines) goes; /dev/null by default. */
  stdout?: string
}

const seenStderr = new Set<string>()

export async function start (options: StartOptions): Promise<Running> {
  const stdout = openSync(options.stdout ?? '/dev/null', 'a')
  const child: ChildProcess = fork(options.script, [options.role], {
    env: { ...process.env, ...options.env },
    execArgv: ['--expose-gc', ...(options.execArgv ?? [])],
    stdio: ['ignore', stdout, 'pipe', 'ipc']
  })
  // Each distinct stderr line once (e.g. a warning that Node prints once per socket).
  createInterface({ input: child.stderr! }).on('line', (line) => {
    const key = line.replace(/^\(node:\d+\) /, '')
    if (seenStderr.has(key)) return
    seenStderr.add(key)
    process.stderr.write(`[${options.role} ${String(child.pid)}] ${line}\n`)
  })
  let beforeReady: ((code: number | null) => void) | undefined
  const exited = new Promise<void>((resolve) => child.once('exit', (code) => {
    beforeReady?.(code)
    resolve()
  }))
  const ready = await new Promise<Ready>((resolve, reject) => {
    beforeReady = (code) => reject(new Error(`${options.role} exited with ${String(code)} before it was ready`))
    child.once('error', reject)
    child.once('message', (message: Ready) => resolve(message))
  })
  beforeReady = undefined
  const ask = async <T extends MemoryReport | Done | StatsReport>(message: ParentMessage): Promise<T> => await new Promise((resolve) => {
    child.once('message', (reply: T) => resolve(reply))
    child.send(message)
  })
  return {
    ...ready,
    pid: child.pid!,
    memory: async (gc) => await ask<MemoryReport>({ type: 'memory', gc }),
    stats: async () => (await ask<StatsReport>({ type: 'stats' })).stats,
    profile: async () => {
      await ask<Done>({ type: 'profile-start' })
      return async (file) => { await ask<Done>({ type: 'profile-stop', file }) }
    },
    close: async () => {
      if (child.exitCode === null) child.send({ type: 'close' } satisfies ParentMessage)
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(timer)
    }
  }
}
