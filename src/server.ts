import type { ServerResponse } from 'node:http'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { buildApp } from './app.js'
import type { Config } from './config.js'

/** Lines are written to stdout once this many bytes (about a dozen request lines) are buffered… */
export const LOG_BUFFER_BYTES = 4096
/** …or at this interval after a line, whichever comes first, so a quiet service still shows its lines at once. */
export const LOG_FLUSH_MS = 100
/** How long shutdown waits for a log write already in flight before writing the rest synchronously. */
const LOG_DRAIN_MS = 1000

type LogStream = ReturnType<typeof pino.destination>

/**
 * stdout, written off the request path and in batches; drainLog() it on shutdown. Without
 * minLength every line is its own write handed to libuv's thread pool and back, which cost about
 * 60 µs of CPU per request through inject() on this kind of machine (BENCHMARKS.md, round 3);
 * batched, a dozen lines share that. A crash that skips exit handlers (SIGKILL, V8 out of memory)
 * loses what is buffered: up to LOG_BUFFER_BYTES, or LOG_FLUSH_MS of lines, more while stdout's
 * reader is behind. That is pino's documented trade-off for asynchronous logging.
 */
export function productionLogStream (dest: number | string = 1): LogStream {
  // sonic-boom's own periodicFlush keeps a quiet service's lines prompt. (It also writes an empty
  // chunk each interval when idle, ten empty writes a second; a hand-written timer that avoided
  // them showed no load-bench gain, BENCHMARKS.md.)
  return pino.destination({ dest, sync: false, minLength: LOG_BUFFER_BYTES, periodicFlush: LOG_FLUSH_MS })
}

/**
 * Writes out every buffered line. flushSync() alone skips a chunk whose write is still in libuv's
 * thread pool (or waiting to retry on a full pipe), so wait for that first, for at most LOG_DRAIN_MS.
 */
export async function drainLog (stream: LogStream): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    // The callback's error (fsync on a pipe is refused) does not matter: the bytes were written.
    new Promise<void>((resolve) => { stream.flush(() => { resolve() }) }),
    new Promise<void>((resolve) => { timer = setTimeout(resolve, LOG_DRAIN_MS) })
  ])
  clearTimeout(timer)
  stream.flushSync()
}

/**
 * The process side of `serve`: build, listen, and shut down gracefully on SIGTERM/SIGINT. The
 * shutdown handler is installed only once listening succeeded, so a failed start (port in use)
 * rejects, and the command exits non-zero, instead of being taken for a shutdown.
 */
export async function startServer (config: Config): Promise<void> {
  const logStream = productionLogStream()
  const app = await buildApp(config, { logStream })
  const drain = drainKeepAlive(app)
  try {
    await app.listen({ host: config.host, port: config.port })
  } catch (error) {
    app.log.fatal({ err: error }, 'could not start listening')
    await app.close()
    await drainLog(logStream)
    throw error
  }
  closeWithGrace({ delay: config.shutdownGraceMs, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down: draining in-flight requests')
    drain()
    // close() stops accepting, waits for in-flight requests, then runs every plugin's onClose
    // (upstream pools, the store).
    await app.close()
    await drainLog(logStream)
  })
}

/**
 * server.close() only reaps connections that are idle at that moment. A keep-alive connection
 * whose request is still in flight would stay open after its answer until keepAliveTimeout (72 s),
 * so close() would outlast the grace delay and the process would exit 1. Returns the function
 * that starts draining: in-flight answers then carry `Connection: close` (the client learns not
 * to reuse the socket, so no request races its closing), and any connection that still turns
 * idle is closed as soon as its answer is sent. Requests arriving meanwhile get Fastify's 503.
 */
function drainKeepAlive (app: FastifyInstance): () => void {
  const inFlight = new Set<ServerResponse>()
  let draining = false
  app.server.on('request', (_request, response: ServerResponse) => {
    inFlight.add(response)
    response.once('close', () => {
      inFlight.delete(response)
      if (draining) app.server.closeIdleConnections()
    })
  })
  return () => {
    draining = true
    for (const response of inFlight) {
      if (!response.headersSent) response.setHeader('connection', 'close')
    }
  }
}
