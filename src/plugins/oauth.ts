import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import type { Config } from '../config.js'
import { OAuthTokens } from '../segment/oauth.js'
import { userAgent } from '../version.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** OAuth sources' access tokens (segment/oauth.ts), one cached per connection. */
    oauth: OAuthTokens
  }
}

export interface OAuthPluginOptions {
  config: Config
  /** Tests may inject a dispatcher per token server origin. */
  dispatcher?: (origin: string) => Dispatcher
  /** Wall-clock milliseconds for token expiry and assertion times; tests pass a clock they move. */
  clock?: () => number
}

/** Token servers' pools and the token cache, closed with the app. */
export default fp<OAuthPluginOptions>(async (app, { config, dispatcher, clock }) => {
  const tokens = new OAuthTokens({
    maxAttempts: config.segment.maxAttempts,
    attemptTimeoutMs: config.segment.attemptTimeoutMs,
    userAgent,
    ...(dispatcher === undefined ? {} : { dispatcher }),
    ...(clock === undefined ? {} : { now: clock })
  })
  app.decorate('oauth', tokens)
  app.addHook('onClose', async () => { await tokens.close() })
}, { name: 'oauth' })
