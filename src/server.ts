import type { ServerResponse } from 'node:http'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { buildApp } from './app.js'
import type { Config } from './config.js'

/** Lines are written to stdout once this many bytes (about a dozen request lines) are buffered… */
export const LOG_BUFFER_BYTES = 4096
/** …or at this interval, whichever comes first, so a quiet service still shows its lines at once. */
export const LOG_FLUSH_MS = 100

/**
 * stdout, written off the request path and in batches; flushSync() it on shutdown. Without
 * minLength every line is its own write handed to libuv's thread pool and back, about 60 µs of
 * CPU per request on this kind of machine (BENCHMARKS.md); batched, that cost is shared by a dozen
 * lines. A hard crash (SIGKILL) may lose the lines of the last LOG_FLUSH_MS, which is pino's
 * documented trade-off for asynchronous logging.
 */
export function productionLogStream (dest: number | string = 1): ReturnType<typeof pino.destination> {
  return pino.destination({ dest, sync: false, minLength: LOG_BUFFER_BYTES, periodicFlush: LOG_FLUSH_MS })
}

/** The process side of `serve`: build, listen, and shut down gracefully on SIGTERM/SIGINT. */
export async function startServer (config: Config): Promise<void> {
  const logStream = productionLogStream()
  const app = await buildApp(config, { logStream })
  const drain = drainKeepAlive(app)
  closeWithGrace({ delay: config.shutdownGraceMs, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down: draining in-flight requests')
    drain()
    // close() stops accepting, waits for in-flight requests, then runs every plugin's onClose
    // (upstream pools, the store).
    await app.close()
    logStream.flushSync()
  })
  await app.listen({ host: config.host, port: config.port })
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
