import t from 'tap'
import { ConfigError, loadConfig, parseEncryptionKeys } from '../src/config.js'

const key = (byte: number): string => Buffer.alloc(32, byte).toString('base64')

t.test('defaults are those of the contract', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    host: '127.0.0.1',
    port: 3000,
    logLevel: 'info',
    database: { kind: 'sqlite', path: './data/segment-forwarder.db' },
    encryptionKeys: undefined,
    adminToken: undefined,
    segment: {
      baseUrls: { us: 'https://api.segment.io', eu: 'https://events.eu1.segmentapis.com' },
      allowedEndpoints: [],
      maxAttempts: 4,
      attemptTimeoutMs: 5000,
      deadlineMs: 15000,
      maxEventBytes: 32000,
      maxBatchBytes: 500000,
      coalesce: true,
      maxWaitingEvents: 10000
    }
  })
})

t.test('every variable is read', async (t) => {
  const config = loadConfig({
    HOST: '0.0.0.0',
    PORT: '8080',
    LOG_LEVEL: 'warn',
    DATABASE_URL: 'postgres://u@db:5432/sf',
    ENCRYPTION_KEYS: `new:${key(1)},old:${key(2)}`,
    ADMIN_TOKEN: 'adm-0123456789abcdefghijklmnopqrstuv',
    SEGMENT_API_URL: 'http://127.0.0.1:4000/',
    SEGMENT_EU_API_URL: 'http://127.0.0.1:4001',
    SEGMENT_ALLOWED_ENDPOINTS: 'https://a.example.com, https://b.example.com',
    SEGMENT_MAX_ATTEMPTS: '2',
    SEGMENT_ATTEMPT_TIMEOUT_MS: '100',
    SEGMENT_DEADLINE_MS: '1000',
    SEGMENT_MAX_EVENT_BYTES: '1000',
    SEGMENT_MAX_BATCH_BYTES: '5000',
    COALESCE: 'off',
    COALESCE_MAX_WAITING_EVENTS: '50'
  })
  t.equal(config.port, 8080)
  t.equal(config.database.kind, 'postgres')
  t.same(config.encryptionKeys?.map((k) => k.kid), ['new', 'old'])
  t.same(config.segment.baseUrls, { us: 'http://127.0.0.1:4000', eu: 'http://127.0.0.1:4001' })
  t.same(config.segment.allowedEndpoints, ['https://a.example.com', 'https://b.example.com'])
  t.match(config.segment, { maxAttempts: 2, attemptTimeoutMs: 100, deadlineMs: 1000, maxEventBytes: 1000, maxBatchBytes: 5000, coalesce: false, maxWaitingEvents: 50 })
})

t.test('a bad value names its variable and what is wrong', async (t) => {
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ PORT: 'eighty' }, 'PORT', /PORT: .*eighty/],
    [{ PORT: '70000' }, 'PORT', /PORT: must be an integer from 0 to 65535/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /LOG_LEVEL/],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', /DATABASE_URL/],
    [{ DATABASE_URL: 'postgres://u@h/db' }, 'ENCRYPTION_KEYS', /ENCRYPTION_KEYS: must be set when DATABASE_URL is PostgreSQL/],
    [{ ENCRYPTION_KEYS: 'nocolon' }, 'ENCRYPTION_KEYS', /ENCRYPTION_KEYS: entry 1 is not kid:base64key/],
    [{ ENCRYPTION_KEYS: `k:${Buffer.alloc(16).toString('base64')}` }, 'ENCRYPTION_KEYS', /must be 32 bytes/],
    [{ ENCRYPTION_KEYS: `k:${key(1)},k:${key(2)}` }, 'ENCRYPTION_KEYS', /appears twice/],
    [{ SEGMENT_API_URL: 'ftp://x' }, 'SEGMENT_API_URL', /http or https/],
    [{ SEGMENT_EU_API_URL: 'https://x/v1' }, 'SEGMENT_EU_API_URL', /no path/],
    [{ SEGMENT_ALLOWED_ENDPOINTS: 'https://ok.example.com,https://u:p@x.example.com' }, 'SEGMENT_ALLOWED_ENDPOINTS', /credentials/],
    [{ SEGMENT_MAX_ATTEMPTS: '0' }, 'SEGMENT_MAX_ATTEMPTS', /SEGMENT_MAX_ATTEMPTS: must be an integer from 1/],
    [{ SEGMENT_MAX_BATCH_BYTES: '1000' }, 'SEGMENT_MAX_BATCH_BYTES', /not be smaller/],
    [{ COALESCE: 'yes' }, 'COALESCE', /COALESCE/],
    [{ COALESCE_MAX_WAITING_EVENTS: '0' }, 'COALESCE_MAX_WAITING_EVENTS', /COALESCE_MAX_WAITING_EVENTS: must be an integer from 1/]
  ]
  for (const [env, variable, message] of cases) {
    t.throws(() => loadConfig(env), { name: 'ConfigError', variable, message }, variable)
  }
})

t.test('key ring parsing', async (t) => {
  t.same(parseEncryptionKeys(` a:${key(3)} , b:${key(4)} `).map((k) => k.kid), ['a', 'b'])
  t.throws(() => parseEncryptionKeys(''), ConfigError)
  t.throws(() => parseEncryptionKeys(`a:${key(3)}x`), ConfigError)
})

t.test('ADMIN_TOKEN must be at least 32 characters', async (t) => {
  t.throws(() => loadConfig({ ADMIN_TOKEN: 'short-but-not-empty-admin-token' }), { name: 'ConfigError', variable: 'ADMIN_TOKEN', message: /at least 32 characters \(it is 31\)/ })
  t.equal(loadConfig({ ADMIN_TOKEN: 'a'.repeat(32) }).adminToken, 'a'.repeat(32))
  t.equal(loadConfig({ ADMIN_TOKEN: '' }).adminToken, undefined, 'empty is unset: admin routes off')
})

t.test('configuration errors name the variable, never a secret value', async (t) => {
  const secret = 'hunter2-s3cret'
  const cases: Array<[Record<string, string>, string]> = [
    [{ DATABASE_URL: `mysql://admin:${secret}@db/x` }, 'DATABASE_URL'],
    [{ DATABASE_URL: `${secret}` }, 'DATABASE_URL'],
    [{ ENCRYPTION_KEYS: `k:${secret}` }, 'ENCRYPTION_KEYS'],
    [{ ADMIN_TOKEN: secret }, 'ADMIN_TOKEN'],
    [{ SEGMENT_API_URL: `https://user:${secret}@proxy.example.com` }, 'SEGMENT_API_URL'],
    [{ SEGMENT_EU_API_URL: `ftp://user:${secret}@proxy.example.com` }, 'SEGMENT_EU_API_URL'],
    [{ SEGMENT_EU_API_URL: `https://user:${secret}@proxy.example.com/v1` }, 'SEGMENT_EU_API_URL'],
    [{ SEGMENT_ALLOWED_ENDPOINTS: `https://ok.example.com,https://u:${secret}@x.example.com` }, 'SEGMENT_ALLOWED_ENDPOINTS'],
    [{ SEGMENT_ALLOWED_ENDPOINTS: `not a url ${secret}@x` }, 'SEGMENT_ALLOWED_ENDPOINTS'],
    [{ DATABASE_URL: 'postgres://u@h/db', ENCRYPTION_KEYS: `k:${secret}` }, 'ENCRYPTION_KEYS']
  ]
  for (const [env, variable] of cases) {
    let message = ''
    try {
      loadConfig(env)
    } catch (error) {
      t.match(error, { name: 'ConfigError', variable }, variable)
      message = (error as Error).message
    }
    t.ok(message.startsWith(`${variable}: `), `${variable}: the message names it`)
    t.notMatch(message, secret, `${variable}: the message does not show the value (${message})`)
  }
})

t.test('SHUTDOWN_GRACE_MS below SEGMENT_DEADLINE_MS is a warning, not an error', async (t) => {
  t.same(loadConfig({}).warnings, [], 'the defaults are consistent')
  const { warnings } = loadConfig({ SHUTDOWN_GRACE_MS: '5000', SEGMENT_DEADLINE_MS: '15000' })
  t.equal(warnings.length, 1)
  t.match(warnings[0], /SHUTDOWN_GRACE_MS \(5000\) is below SEGMENT_DEADLINE_MS \(15000\)/)
  t.same(loadConfig({ SHUTDOWN_GRACE_MS: '15000', SEGMENT_DEADLINE_MS: '15000' }).warnings, [])
})
