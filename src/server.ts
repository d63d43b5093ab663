import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import type { Config } from './config.js'

/** The process side of `serve`: build, listen, and shut down gracefully on SIGTERM/SIGINT. */
export async function startServer (config: Config): Promise<void> {
  const app = await buildApp(config)
  closeWithGrace({ delay: config.shutdownGraceMs, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down: draining in-flight requests')
    // close() stops accepting, waits for in-flight requests, then runs every plugin's onClose
    // (upstream pools, the store).
    await app.close()
  })
  await app.listen({ host: config.host, port: config.port })
}
