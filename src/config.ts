import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

// The environment, as strings, with defaults. Numbers are validated here and converted below, so
// every bad value is reported with the name of its variable.
const Integer = (def: number, min: number, max: number) =>
  Type.String({ default: String(def), pattern: '^[0-9]+$', description: `integer ${min}..${max}`, minimum: min, maximum: max })

export const EnvSchema = Type.Object({
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Integer(3000, 0, 65535),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  DATABASE_URL: Type.String({ default: 'sqlite:./data/segment-forwarder.db', pattern: '^(sqlite:.+|postgres(ql)?://.+)$' }),
  DATABASE_POOL_SIZE: Integer(10, 1, 1000),
  DATABASE_TIMEOUT_MS: Integer(5000, 100, 600000),
  ENCRYPTION_KEYS: Type.Optional(Type.String()),
  ADMIN_TOKEN: Type.Optional(Type.String()),
  SEGMENT_API_URL: Type.String({ default: 'https://api.segment.io' }),
  SEGMENT_EU_API_URL: Type.String({ default: 'https://events.eu1.segmentapis.com' }),
  SEGMENT_ALLOWED_ENDPOINTS: Type.String({ default: '' }),
  SEGMENT_OAUTH_URL: Type.String({ default: 'https://oauth2.segment.io' }),
  SEGMENT_EU_OAUTH_URL: Type.String({ default: 'https://oauth2.eu1.segmentapis.com' }),
  SEGMENT_MAX_ATTEMPTS: Integer(4, 1, 20),
  SEGMENT_ATTEMPT_TIMEOUT_MS: Integer(5000, 1, 600000),
  SEGMENT_DEADLINE_MS: Integer(15000, 1, 3600000),
  SEGMENT_MAX_EVENT_BYTES: Integer(32000, 100, 10000000),
  SEGMENT_MAX_BATCH_BYTES: Integer(500000, 100, 100000000),
  COALESCE: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  COALESCE_MAX_WAITING_EVENTS: Integer(10000, 1, 10000000),
  RATE_LIMIT_MAX: Integer(6000, 0, 100000000),
  RATE_LIMIT_WINDOW_MS: Integer(60000, 1, 86400000),
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: Integer(1000, 0, 600000),
  PRESSURE_MAX_HEAP_BYTES: Integer(0, 0, Number.MAX_SAFE_INTEGER),
  PRESSURE_MAX_RSS_BYTES: Integer(0, 0, Number.MAX_SAFE_INTEGER),
  SHUTDOWN_GRACE_MS: Integer(20000, 0, 600000),
  // Queued delivery (src/delivery/*).
  DELIVERY_MAX_AGE_MS: Integer(86400000, 1, 30 * 86400000),
  DELIVERY_BACKOFF_MAX_MS: Integer(300000, 1, 86400000),
  DELIVERY_LEASE_MS: Integer(30000, 100, 3600000),
  DELIVERY_RETENTION_MS: Integer(604800000, 0, 365 * 86400000),
  QUEUE_MAX_EVENTS: Integer(1000000, 1, 1000000000)
})

export type Env = Static<typeof EnvSchema>

export interface EncryptionKey {
  kid: string
  key: Buffer
}

export type Region = 'us' | 'eu'

export interface Config {
  host: string
  port: number
  logLevel: string
  database: { kind: 'sqlite', path: string } | { kind: 'postgres', url: string, poolSize: number, timeoutMs: number }
  /** Undefined: the embedded default (a generated key file next to the SQLite database). */
  encryptionKeys: EncryptionKey[] | undefined
  adminToken: string | undefined
  segment: {
    baseUrls: Record<Region, string>
    allowedEndpoints: string[]
    /** OAuth sources: the token endpoints' base URLs per region (`{base}/token`); also the assertion's `aud`. */
    oauthUrls: Record<Region, string>
    maxAttempts: number
    attemptTimeoutMs: number
    deadlineMs: number
    maxEventBytes: number
    maxBatchBytes: number
    /** COALESCE=on: concurrent calls of a connection share /v1/batch requests. */
    coalesce: boolean
    /** Events that may wait in one connection's lane before calls get 503 overloaded. */
    maxWaitingEvents: number
  }
  rateLimit: { max: number, windowMs: number }
  pressure: { maxEventLoopDelayMs: number, maxHeapUsedBytes: number, maxRssBytes: number }
  shutdownGraceMs: number
  /** Settings that work but are probably a mistake; logged at start. */
  warnings: string[]
  delivery: { maxAgeMs: number, backoffMaxMs: number, leaseMs: number, retentionMs: number, queueMaxEvents: number }
}

/** ADMIN_TOKEN guards every workspace: at least this long (24 random bytes in base64url are 32). */
const ADMIN_TOKEN_MIN_LENGTH = 32

// Variables whose value may hold a secret (a password in a URL, keys, tokens): errors never print it.
const secretVariables = new Set(['DATABASE_URL', 'ENCRYPTION_KEYS', 'ADMIN_TOKEN'])

/** A value as it may appear in an error message: secrets and URLs with credentials never do. */
function shown (variable: string, value: unknown): string {
  if (secretVariables.has(variable)) return 'the value is not shown: it may hold a secret'
  const text = String(value)
  // Anything that could be userinfo (user:password@) stays out, parseable as a URL or not.
  if (text.includes('@')) return 'the value is not shown: it may hold credentials'
  return `got "${text}"`
}

export class ConfigError extends Error {
  constructor (readonly variable: string, problem: string) {
    super(`${variable}: ${problem}`)
    this.name = 'ConfigError'
  }
}

/** Parses a `kid:base64key[,kid:base64key…]` key ring; every key must be 32 bytes. */
export function parseEncryptionKeys (value: string, variable = 'ENCRYPTION_KEYS'): EncryptionKey[] {
  const entries = value.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
  if (entries.length === 0) throw new ConfigError(variable, 'is empty; expected kid:base64key[,kid:base64key…]')
  const seen = new Set<string>()
  return entries.map((entry, position) => {
    const match = /^([A-Za-z0-9._-]{1,64}):([A-Za-z0-9+/]+={0,2})$/.exec(entry)
    if (match === null) {
      throw new ConfigError(variable, `entry ${position + 1} is not kid:base64key (kid of letters, digits, '.', '_' or '-')`)
    }
    const [, kid, encoded] = match as unknown as [string, string, string]
    const key = Buffer.from(encoded, 'base64')
    if (key.length !== 32 || key.toString('base64') !== encoded) {
      throw new ConfigError(variable, `key "${kid}" must be 32 bytes in base64 (got ${key.length} bytes)`)
    }
    if (seen.has(kid)) throw new ConfigError(variable, `key id "${kid}" appears twice`)
    seen.add(kid)
    return { kid, key }
  })
}

/** A base URL with no path, query or credentials, normalised by WHATWG URL (lower-case host, no default port). */
export function parseBaseUrl (value: string, variable: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(variable, `is not an absolute URL (${shown(variable, value)})`)
  }
  if (url.username !== '' || url.password !== '') throw new ConfigError(variable, 'must not carry credentials (the value is not shown)')
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(variable, `must use http or https (${shown(variable, value)})`)
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw new ConfigError(variable, `must be a base URL with no path, query or fragment (${shown(variable, value)})`)
  }
  return url.origin
}

function integer (env: Env, name: keyof Env): number {
  const property = EnvSchema.properties[name] as unknown as { minimum: number, maximum: number }
  const value = Number(env[name])
  if (!Number.isSafeInteger(value) || value < property.minimum || value > property.maximum) {
    throw new ConfigError(name, `must be an integer from ${property.minimum} to ${property.maximum} (${shown(name, env[name])})`)
  }
  return value
}

/** Builds a typed Config from an environment; throws ConfigError naming the first bad variable. */
export function loadConfig (source: Record<string, string | undefined>): Config {
  const raw: Record<string, string> = {}
  for (const name of Object.keys(EnvSchema.properties)) {
    const value = source[name]
    // An empty variable means "use the default", as in most .env tooling.
    if (value !== undefined && value !== '') raw[name] = value
  }
  const env = Value.Default(EnvSchema, raw) as Env
  const first = Value.Errors(EnvSchema, env).First()
  if (first !== undefined) {
    const name = first.path.slice(1)
    throw new ConfigError(name, `${first.message} (${shown(name, raw[name])})`)
  }

  const databaseUrl = env.DATABASE_URL
  const database: Config['database'] = databaseUrl.startsWith('sqlite:')
    ? { kind: 'sqlite', path: databaseUrl.slice('sqlite:'.length) }
    : { kind: 'postgres', url: databaseUrl, poolSize: integer(env, 'DATABASE_POOL_SIZE'), timeoutMs: integer(env, 'DATABASE_TIMEOUT_MS') }

  const encryptionKeys = env.ENCRYPTION_KEYS === undefined ? undefined : parseEncryptionKeys(env.ENCRYPTION_KEYS)
  if (encryptionKeys === undefined && database.kind === 'postgres') {
    throw new ConfigError('ENCRYPTION_KEYS', 'must be set when DATABASE_URL is PostgreSQL: replicas must share one key ring, so none may generate its own')
  }

  if (env.ADMIN_TOKEN !== undefined && env.ADMIN_TOKEN.length < ADMIN_TOKEN_MIN_LENGTH) {
    throw new ConfigError('ADMIN_TOKEN', `must be at least ${ADMIN_TOKEN_MIN_LENGTH} characters (it is ${env.ADMIN_TOKEN.length}); make one with: node -e "console.log(require('crypto').randomBytes(24).toString('base64url'))"`)
  }

  const maxEventBytes = integer(env, 'SEGMENT_MAX_EVENT_BYTES')
  const maxBatchBytes = integer(env, 'SEGMENT_MAX_BATCH_BYTES')
  if (maxBatchBytes < maxEventBytes) throw new ConfigError('SEGMENT_MAX_BATCH_BYTES', 'must not be smaller than SEGMENT_MAX_EVENT_BYTES')

  const warnings: string[] = []
  const shutdownGraceMs = integer(env, 'SHUTDOWN_GRACE_MS')
  const deadlineMs = integer(env, 'SEGMENT_DEADLINE_MS')
  if (shutdownGraceMs < deadlineMs) {
    warnings.push(`SHUTDOWN_GRACE_MS (${shutdownGraceMs}) is below SEGMENT_DEADLINE_MS (${deadlineMs}): on SIGTERM, a forward still waiting on Segment can be cut off before its deadline, and its caller gets no answer`)
  }

  return {
    host: env.HOST,
    port: integer(env, 'PORT'),
    logLevel: env.LOG_LEVEL,
    database,
    encryptionKeys,
    adminToken: env.ADMIN_TOKEN,
    segment: {
      baseUrls: {
        us: parseBaseUrl(env.SEGMENT_API_URL, 'SEGMENT_API_URL'),
        eu: parseBaseUrl(env.SEGMENT_EU_API_URL, 'SEGMENT_EU_API_URL')
      },
      allowedEndpoints: env.SEGMENT_ALLOWED_ENDPOINTS.split(',').map((s) => s.trim()).filter((s) => s !== '')
        .map((s) => parseBaseUrl(s, 'SEGMENT_ALLOWED_ENDPOINTS')),
      oauthUrls: {
        us: parseBaseUrl(env.SEGMENT_OAUTH_URL, 'SEGMENT_OAUTH_URL'),
        eu: parseBaseUrl(env.SEGMENT_EU_OAUTH_URL, 'SEGMENT_EU_OAUTH_URL')
      },
      maxAttempts: integer(env, 'SEGMENT_MAX_ATTEMPTS'),
      attemptTimeoutMs: integer(env, 'SEGMENT_ATTEMPT_TIMEOUT_MS'),
      deadlineMs,
      maxEventBytes,
      maxBatchBytes,
      coalesce: env.COALESCE === 'on',
      maxWaitingEvents: integer(env, 'COALESCE_MAX_WAITING_EVENTS')
    },
    rateLimit: { max: integer(env, 'RATE_LIMIT_MAX'), windowMs: integer(env, 'RATE_LIMIT_WINDOW_MS') },
    pressure: {
      maxEventLoopDelayMs: integer(env, 'PRESSURE_MAX_EVENT_LOOP_DELAY_MS'),
      maxHeapUsedBytes: integer(env, 'PRESSURE_MAX_HEAP_BYTES'),
      maxRssBytes: integer(env, 'PRESSURE_MAX_RSS_BYTES')
    },
    shutdownGraceMs,
    warnings,
    delivery: {
      maxAgeMs: integer(env, 'DELIVERY_MAX_AGE_MS'),
      backoffMaxMs: integer(env, 'DELIVERY_BACKOFF_MAX_MS'),
      leaseMs: integer(env, 'DELIVERY_LEASE_MS'),
      retentionMs: integer(env, 'DELIVERY_RETENTION_MS'),
      queueMaxEvents: integer(env, 'QUEUE_MAX_EVENTS')
    }
  }
}
