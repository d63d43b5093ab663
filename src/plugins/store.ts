import fp from 'fastify-plugin'
import type { Config } from '../config.js'
import { ConnectionService } from '../connections.js'
import { ensureCanary } from '../store/canary.js'
import type { KeyRing } from '../store/crypto.js'
import { resolveKeyRing } from '../store/key-ring.js'
import { openStore } from '../store/open-store.js'
import type { Store } from '../store/store.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
    keyRing: KeyRing
    connections: ConnectionService
  }
}

export interface StorePluginOptions {
  config: Config
}

export default fp<StorePluginOptions>(async (app, { config }) => {
  const { ring, generatedKeyFile, exposedKeyFile } = resolveKeyRing(config)
  if (exposedKeyFile !== undefined) {
    app.log.warn(exposedKeyFile, 'the encryption key file can be read by other users: restrict it with chmod 600')
  }
  if (generatedKeyFile !== undefined) {
    app.log.warn({ keyFile: generatedKeyFile }, 'ENCRYPTION_KEYS is not set: generated a local encryption key (mode 0600); back it up with the database, and set ENCRYPTION_KEYS before running several replicas')
  }
  const store = await openStore(config.database)
  app.addHook('onClose', async () => { await store.close() })
  await store.migrate()
  await ensureCanary(store, ring).catch((error: unknown) => {
    throw new Error(`ENCRYPTION_KEYS cannot open the data already stored (${(error as Error).message}); start with the keys the Write Keys were sealed with`)
  })
  app.decorate('store', store)
  app.decorate('keyRing', ring)
  app.decorate('connections', new ConnectionService(store, ring, config.segment))
}, { name: 'store' })
