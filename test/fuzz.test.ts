// Property-based fuzzing of every route. For each generated request the answer is never a 5xx,
// every error is a proper problem document, a 2xx comes only for a request that is valid, a valid
// request does get its 2xx, and the app still answers /healthz afterwards.
// Reproduce a failure with FUZZ_SEED=<seed printed below>; scale the runs with FUZZ_RUNS=<factor>.
import t from 'tap'
import fc from 'fast-check'
import assert from 'node:assert/strict'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { ADMIN_TOKEN, build, createWorkspace, type TestContext, type TestWorkspace } from './helper.js'
import { fakeSegment } from './support/actions.js'
import { STEADY_ENV, fuzzRuns, fuzzSeed, problemViolation } from './support/break.js'
import { freshPostgresUrl, postgresSkip } from './support/postgres.js'
import type { FakeSegment } from './fake-segment.js'
import { createToken } from '../src/workspaces.js'
import { testKeys } from './support/oauth.js'

const seed = fuzzSeed()
t.comment(`fuzz seed ${seed}: rerun with FUZZ_SEED=${seed}`)

type Json = Record<string, unknown>
type Auth = 'admin' | 'workspace' | 'none'

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const nonEmpty = (v: unknown): boolean => typeof v === 'string' && v.length > 0
const codePoints = (s: string): number => [...s].length
const onlyKeys = (v: Json, keys: string[]): boolean => Object.keys(v).every((k) => keys.includes(k))
const WRITE_KEY = /^[!-9;-~]{1,256}$/
const OAUTH_ID = /^[!-~]{1,256}$/

// Necessary conditions for a body the service may accept (the service's own ajv schemas are the
// real definition; these are written independently of them, from design/api.md).
function validCall (type: string, v: unknown, inBatch: boolean): boolean {
  if (!isObject(v) || 'writeKey' in v) return false
  if (inBatch ? v.type !== type : (v.type !== undefined && v.type !== type)) return false
  // Fields that, when present, must be non-empty strings; Segment's format is open to others.
  const nonEmptyFields: Record<string, string[]> = {
    track: ['event'], identify: [], group: ['groupId'], page: ['name', 'category'], screen: ['name', 'category'], alias: ['previousId']
  }
  for (const key of ['userId', 'anonymousId', ...nonEmptyFields[type]!]) if (key in v && !nonEmpty(v[key])) return false
  if ('messageId' in v && !(typeof v.messageId === 'string' && v.messageId !== '' && codePoints(v.messageId) <= 100)) return false
  if ('timestamp' in v && typeof v.timestamp !== 'string') return false
  const objects: Record<string, string[]> = {
    track: ['properties'], identify: ['traits'], group: ['traits'], page: ['properties'], screen: ['properties'], alias: []
  }
  for (const key of ['context', 'integrations', ...objects[type]!]) if (key in v && !isObject(v[key])) return false
  if (type === 'track' && !nonEmpty(v.event)) return false
  if (type === 'group' && !nonEmpty(v.groupId)) return false
  if (type === 'alias') return nonEmpty(v.previousId) && nonEmpty(v.userId)
  return nonEmpty(v.userId) || nonEmpty(v.anonymousId)
}

function validBatch (v: unknown): boolean {
  if (!isObject(v) || 'writeKey' in v || !Array.isArray(v.batch) || v.batch.length < 1 || v.batch.length > 2500) return false
  for (const key of ['context', 'integrations']) if (key in v && !isObject(v[key])) return false
  const types = ['track', 'identify', 'group', 'page', 'screen', 'alias']
  return v.batch.every((item: unknown) => isObject(item) && types.includes(item.type as string) && validCall(item.type as string, item, true))
}

const validName = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && codePoints(v) <= 200
const validRegion = (v: unknown): boolean => v === 'us' || v === 'eu'
const validPassword = (v: unknown): boolean => typeof v === 'string' && codePoints(v) <= 256

/** Prototype-poisoning keys anywhere: the service must refuse them, whatever the route. */
function poisoned (root: unknown): boolean {
  // Iterative: the bodies nest 10,000 levels deep.
  const stack = [root]
  while (stack.length > 0) {
    const v = stack.pop()
    if (Array.isArray(v)) {
      stack.push(...v)
    } else if (isObject(v)) {
      for (const [key, value] of Object.entries(v)) {
        if (key === '__proto__') return true
        if (key === 'constructor' && isObject(value) && 'prototype' in value) return true
        stack.push(value)
      }
    }
  }
  return false
}

// Arbitraries of valid pieces. Keys and values exclude poisoning keys, which get their own cases.
const edgeStrings = ['\u0000', '\u202e', '\u200f', '\ufeff', '\ud800', '\udfff', '\ud83d\ude00', 'e\u0301', '\u2028', '"\\', '\u00a0']
const text = (max: number): fc.Arbitrary<string> => fc.oneof(
  fc.string({ minLength: 1, maxLength: max }),
  fc.string({ unit: 'binary', minLength: 1, maxLength: max }),
  fc.array(fc.constantFrom(...edgeStrings, 'a', 'Z'), { minLength: 1, maxLength: Math.min(max, 12) }).map((parts) => parts.join(''))
)
const safeKey = fc.string({ maxLength: 12 }).filter((k) => k !== '__proto__' && k !== 'constructor' && k !== 'prototype')
const jsonish: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true },
    fc.constant(null), fc.boolean(), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), text(20),
    fc.array(tie('value'), { maxLength: 3 }), fc.dictionary(safeKey, tie('value'), { maxKeys: 3 }))
})).value
const freeObject = fc.dictionary(safeKey, jsonish, { maxKeys: 4 })
const timestamp = fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString())
const messageId = fc.string({ minLength: 1, maxLength: 100 })

function callArbitrary (type: string, inBatch: boolean): fc.Arbitrary<Json> {
  const identity = fc.oneof(
    fc.record({ userId: text(30) }),
    fc.record({ anonymousId: text(30) }),
    fc.record({ userId: text(30), anonymousId: text(30) })
  )
  const common = fc.record({ messageId, timestamp, context: freeObject, integrations: freeObject }, { requiredKeys: [] })
  const specific: Record<string, fc.Arbitrary<Json>> = {
    track: fc.record({ event: text(40), properties: freeObject }, { requiredKeys: ['event'] }),
    identify: fc.record({ traits: freeObject }, { requiredKeys: [] }),
    group: fc.record({ groupId: text(30), traits: freeObject }, { requiredKeys: ['groupId'] }),
    page: fc.record({ name: text(30), category: text(30), properties: freeObject }, { requiredKeys: [] }),
    screen: fc.record({ name: text(30), properties: freeObject }, { requiredKeys: [] }),
    alias: fc.record({ previousId: text(30), userId: text(30) })
  }
  return fc.tuple(type === 'alias' ? fc.constant({}) : identity, common, specific[type]!)
    .map(([a, b, c]) => ({ ...(inBatch ? { type } : {}), ...a, ...b, ...c }))
}

const batchItem = fc.constantFrom('track', 'identify', 'group', 'page', 'screen', 'alias').chain((type) => callArbitrary(type, true))

interface Route {
  name: string
  method: string
  path: string
  auth: Auth
  ok: number
  /** The body contract; absent for routes that take no body. */
  body?: { valid: fc.Arbitrary<Json>, check: (v: unknown) => boolean, fields: Record<string, 'string' | 'object' | 'array'> }
  /** For the action routes: the Segment call type. */
  action?: string
}

const callFields = { userId: 'string', anonymousId: 'string', messageId: 'string', timestamp: 'string', context: 'object', integrations: 'object' } as const

const routes: Route[] = [
  { name: 'healthz', method: 'GET', path: '/healthz', auth: 'none', ok: 200 },
  { name: 'readyz', method: 'GET', path: '/readyz', auth: 'none', ok: 200 },
  { name: 'metrics', method: 'GET', path: '/metrics', auth: 'none', ok: 200 },
  { name: 'openapi', method: 'GET', path: '/openapi.json', auth: 'none', ok: 200 },
  { name: 'docs', method: 'GET', path: '/docs', auth: 'none', ok: 200 },
  {
    name: 'create workspace',
    method: 'POST',
    path: '/v1/admin/workspaces',
    auth: 'admin',
    ok: 201,
    body: { valid: fc.record({ name: text(200) }), check: (v) => isObject(v) && onlyKeys(v, ['name']) && validName(v.name), fields: { name: 'string' } }
  },
  { name: 'list workspaces', method: 'GET', path: '/v1/admin/workspaces', auth: 'admin', ok: 200 },
  { name: 'issue token', method: 'POST', path: '/v1/admin/workspaces/:workspaceId/tokens', auth: 'admin', ok: 201 },
  { name: 'revoke token', method: 'DELETE', path: '/v1/admin/workspaces/:workspaceId/tokens/:tokenId', auth: 'admin', ok: 204 },
  {
    name: 'create connection',
    method: 'POST',
    path: '/v1/connections',
    auth: 'workspace',
    ok: 201,
    body: {
      valid: fc.record({
        name: text(200),
        writeKey: fc.stringMatching(/^[!-9;-~]{1,64}$/),
        password: fc.string({ maxLength: 20 }),
        region: fc.constantFrom('us', 'eu'),
        endpoint: fc.constant('ENDPOINT')
      }, { requiredKeys: ['name', 'writeKey'] }),
      check: (v) => isObject(v) && onlyKeys(v, ['name', 'writeKey', 'password', 'region', 'endpoint']) && validName(v.name) &&
        typeof v.writeKey === 'string' && WRITE_KEY.test(v.writeKey) && (!('password' in v) || validPassword(v.password)) &&
        (!('region' in v) || validRegion(v.region)) && (!('endpoint' in v) || typeof v.endpoint === 'string'),
      fields: { name: 'string', writeKey: 'string', password: 'string', region: 'string', endpoint: 'string' }
    }
  },
  { name: 'list connections', method: 'GET', path: '/v1/connections', auth: 'workspace', ok: 200 },
  { name: 'get connection', method: 'GET', path: '/v1/connections/:connectionId', auth: 'workspace', ok: 200 },
  {
    name: 'patch connection',
    method: 'PATCH',
    path: '/v1/connections/:connectionId',
    auth: 'workspace',
    ok: 200,
    body: {
      valid: fc.record({ name: text(200), region: fc.constantFrom('us', 'eu'), endpoint: fc.constantFrom('ENDPOINT', null) }, { requiredKeys: [] })
        .filter((v) => Object.keys(v).length > 0),
      check: (v) => isObject(v) && Object.keys(v).length > 0 && onlyKeys(v, ['name', 'region', 'endpoint']) &&
        (!('name' in v) || validName(v.name)) && (!('region' in v) || validRegion(v.region)) &&
        (!('endpoint' in v) || v.endpoint === null || typeof v.endpoint === 'string'),
      fields: { name: 'string', region: 'string', endpoint: 'string' }
    }
  },
  {
    name: 'rotate write key',
    method: 'PUT',
    path: '/v1/connections/:connectionId/write-key',
    auth: 'workspace',
    ok: 200,
    body: {
      valid: fc.record({ writeKey: fc.stringMatching(/^[!-9;-~]{1,64}$/), password: fc.string({ maxLength: 20 }) }, { requiredKeys: ['writeKey'] }),
      check: (v) => isObject(v) && onlyKeys(v, ['writeKey', 'password']) && typeof v.writeKey === 'string' && WRITE_KEY.test(v.writeKey) &&
        (!('password' in v) || validPassword(v.password)),
      fields: { writeKey: 'string', password: 'string' }
    }
  },
  {
    name: 'set oauth',
    method: 'PUT',
    path: '/v1/connections/:connectionId/oauth',
    auth: 'workspace',
    ok: 200,
    body: {
      // One real key: any change to it makes it unusable (400), which the check below expects.
      valid: fc.record({ clientId: fc.stringMatching(/^[!-~]{1,64}$/), keyId: fc.stringMatching(/^[!-~]{1,64}$/), privateKey: fc.constant(testKeys().privateKey), authServer: fc.constant('ENDPOINT') }, { requiredKeys: ['clientId', 'keyId', 'privateKey'] }),
      check: (v) => isObject(v) && onlyKeys(v, ['clientId', 'keyId', 'privateKey', 'authServer']) &&
        typeof v.clientId === 'string' && OAUTH_ID.test(v.clientId) && typeof v.keyId === 'string' && OAUTH_ID.test(v.keyId) &&
        typeof v.privateKey === 'string' && v.privateKey.trim() === testKeys().privateKey.trim() && (!('authServer' in v) || typeof v.authServer === 'string'),
      fields: { clientId: 'string', keyId: 'string', privateKey: 'string', authServer: 'string' }
    }
  },
  { name: 'remove oauth', method: 'DELETE', path: '/v1/connections/:connectionId/oauth', auth: 'workspace', ok: 200 },
  { name: 'delete connection', method: 'DELETE', path: '/v1/connections/:connectionId', auth: 'workspace', ok: 204 },
  ...([
    ['track-event', 'track', { event: 'string', properties: 'object' }],
    ['identify-user', 'identify', { traits: 'object' }],
    ['group-user', 'group', { groupId: 'string', traits: 'object' }],
    ['page-view', 'page', { name: 'string', category: 'string', properties: 'object' }],
    ['alias-user', 'alias', { previousId: 'string', userId: 'string' }]
  ] as const).map(([name, type, fields]): Route => ({
    name,
    method: 'POST',
    path: `/v1/connections/:connectionId/actions/${name}`,
    auth: 'workspace',
    ok: 200,
    action: type,
    body: { valid: callArbitrary(type, false), check: (v) => validCall(type, v, false), fields: { ...callFields, ...fields } }
  })),
  {
    name: 'batch-send',
    method: 'POST',
    path: '/v1/connections/:connectionId/actions/batch-send',
    auth: 'workspace',
    ok: 200,
    action: 'batch',
    body: {
      valid: fc.record({ batch: fc.array(batchItem, { minLength: 1, maxLength: 4 }), context: freeObject, integrations: freeObject }, { requiredKeys: ['batch'] }),
      check: validBatch,
      fields: { batch: 'array', context: 'object', integrations: 'object' }
    }
  }
]

// How a generated request departs from a valid one; 'valid' everywhere must get the route's 2xx.
type IdChoice = 'real' | 'unknown' | 'arbitrary' | 'nul' | 'long'
type BodyKind = 'valid' | 'wrongType' | 'json' | 'object' | 'deep' | 'huge' | 'unicode' | 'duplicateKey' | 'poison' | 'truncated' | 'empty' | 'text'
type ContentType = 'json' | 'json-charset' | 'text' | 'form' | 'multipart' | 'none' | 'other'
type AuthChoice = 'right' | 'none' | 'other-realm' | 'basic' | 'garbage'

interface Case {
  route: number
  method: string | null
  ids: IdChoice[]
  arbitraryId: string
  auth: AuthChoice
  garbageAuth: string
  query: string | null
  contentType: ContentType
  otherType: string
  body: BodyKind
  valid: Json
  field: number
  wrongValue: unknown
  rawValue: string
  cut: number
  extra: string
}

const weights = <T>(...entries: Array<[number, T]>): fc.Arbitrary<T> => fc.oneof(...entries.map(([weight, value]) => ({ weight, arbitrary: fc.constant(value) })))
const mostlyNull = <T>(weight: number, other: fc.Arbitrary<T>): fc.Arbitrary<T | null> =>
  fc.oneof({ weight, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: other })
const deepText = fc.tuple(fc.constantFrom(100, 1000, 10_000), fc.boolean()).map(([n, arrays]) => arrays ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n))
const unicodeText = fc.array(fc.constantFrom('\\ud800', '\\udfff', '\\udc00\\ud800', '\\u0000', '\u202e', '\u200f', '\\u202e', '\ufeff', '\\ufffe', '\\uffff', '\ud83d\ude00', '\\ud83d\\ude00', '\u0301', '\u2028', 'a'), { minLength: 1, maxLength: 8 })
  .map((parts) => `"${parts.join('')}"`)
const poisonText = fc.constantFrom(
  '{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}', '{"a":{"__proto__":{"polluted":true}}}', '[{"__proto__":{"polluted":true}}]'
)
const wrongValue = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.double(), fc.array(fc.integer(), { maxLength: 2 }), fc.constant({}), fc.constant(''), fc.string())

// Path segments sent as written (valid percent-encoding); any other id is encodeURIComponent'd.
const ENCODED_IDS = ['..', '%2e%2e', '%2F', '%20', '%00', '%F0%9F%98%80', '%E2%80%AE']

function caseArbitrary (routeIndex: fc.Arbitrary<number>): fc.Arbitrary<Case> {
  return routeIndex.chain((route) => fc.record({
    route: fc.constant(route),
    // null: the route's own method (most cases); else any method, odd ones included.
    method: mostlyNull(6, fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'SEARCH', 'PROPFIND', 'COPY', 'LOCK')),
    ids: fc.array(weights<IdChoice>([12, 'real'], [2, 'unknown'], [2, 'arbitrary'], [1, 'nul'], [1, 'long']), { minLength: 2, maxLength: 2 }),
    // Invalid percent-encoding has its own test below (it needs Fastify's frameworkErrors option).
    arbitraryId: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom(...ENCODED_IDS)),
    auth: weights<AuthChoice>([14, 'right'], [1, 'none'], [1, 'other-realm'], [1, 'basic'], [1, 'garbage']),
    garbageAuth: fc.stringMatching(/^[\x20-\x7e]{0,60}$/),
    query: mostlyNull(3, fc.constantFrom('dryRun=true', 'dryRun=false', 'dryRun=TRUE', 'dryRun=', 'dryRun=true&dryRun=true', 'x=1', '%', '%zz', 'dryRun=%E0%A4%A', 'dryRun[]=true', 'dryRun[a]=1', '__proto__[x]=1')),
    contentType: weights<ContentType>([12, 'json'], [2, 'json-charset'], [1, 'text'], [1, 'form'], [1, 'multipart'], [1, 'none'], [1, 'other']),
    otherType: fc.stringMatching(/^[\x21-\x7e]{1,40}$/),
    body: weights<BodyKind>([8, 'valid'], [3, 'wrongType'], [1, 'json'], [2, 'object'], [1, 'deep'], [1, 'huge'], [2, 'unicode'], [1, 'duplicateKey'], [1, 'poison'], [1, 'truncated'], [1, 'empty'], [1, 'text']),
    valid: routes[route]!.body?.valid ?? fc.constant({}),
    field: fc.nat(),
    wrongValue,
    rawValue: fc.oneof(deepText, unicodeText, poisonText, fc.json()),
    cut: fc.nat(),
    extra: fc.oneof(fc.json(), fc.string({ unit: 'binary', maxLength: 60 }))
  }))
}

interface World {
  app: FastifyInstance
  fake: FakeSegment
  workspace: TestWorkspace
  /** A connection no case changes (the action routes use it). */
  sharedConnectionId: string
  /** Answers by status, to show the run reached both the 2xx and the refusals. */
  statuses: Map<number, number>
}

const PH = '"\u0000PLACEHOLDER\u0000"'

function bodyText (route: Route, c: Case, endpoint: string): string | undefined {
  const valid = JSON.parse(JSON.stringify(c.valid).replaceAll('"ENDPOINT"', JSON.stringify(endpoint))) as Json
  const fields = Object.keys(route.body?.fields ?? { name: 'string' })
  const field = fields[c.field % fields.length]!
  const withField = (raw: string): string => JSON.stringify({ ...valid, [field]: PH }).replace(JSON.stringify(PH), raw)
  switch (c.body) {
    case 'valid': return route.body === undefined ? undefined : JSON.stringify(valid)
    case 'wrongType': {
      const kind = route.body?.fields[field]
      const wrong = kind === 'string'
        ? (typeof c.wrongValue === 'string' ? 7 : c.wrongValue)
        : kind === 'array'
          ? (Array.isArray(c.wrongValue) ? {} : c.wrongValue)
          : (isObject(c.wrongValue) ? [] : c.wrongValue)
      return JSON.stringify({ ...valid, [field]: wrong })
    }
    case 'json': return c.extra
    case 'object': return JSON.stringify({ ...valid, [c.extra]: c.wrongValue })
    case 'deep':
    case 'unicode':
    case 'poison':
      return c.field % 3 === 0 ? c.rawValue : withField(c.rawValue)
    case 'huge': {
      const size = [10_000, 70_000, 200_000, 1_100_000][c.field % 4]!
      return withField(JSON.stringify('é'.repeat(size / 2)))
    }
    case 'duplicateKey': {
      const whole = JSON.stringify(valid)
      const again = `${JSON.stringify(field)}:${JSON.stringify(c.wrongValue) ?? 'null'}`
      return c.cut % 2 === 0 ? `{${again},${whole.slice(1)}` : `${whole.slice(0, -1)}${whole === '{}' ? '' : ','}${again}}`
    }
    case 'truncated': {
      const whole = JSON.stringify(valid)
      return whole.slice(0, c.cut % whole.length)
    }
    case 'empty': return c.cut % 2 === 0 ? '' : undefined
    case 'text': return c.extra
  }
}

const CONTENT_TYPES: Record<Exclude<ContentType, 'other' | 'none'>, string> = {
  json: 'application/json',
  'json-charset': 'application/json; charset=utf-8',
  text: 'text/plain',
  form: 'application/x-www-form-urlencoded',
  multipart: 'multipart/form-data; boundary=x'
}

async function runCase (world: World, c: Case): Promise<void> {
  const { app, fake, workspace } = world
  const route = routes[c.route]!
  const method = c.method ?? route.method
  // Fresh targets, so a DELETE or a rotation in one case cannot change another.
  const real: Record<string, string> = { workspaceId: workspace.id }
  if (route.path.includes(':connectionId')) {
    real.connectionId = route.action === undefined
      ? (await app.connections.create(workspace.id, { name: 'target', writeKey: 'wk_fuzz_target' })).id
      : world.sharedConnectionId
  }
  if (route.path.includes(':tokenId')) real.tokenId = (await createToken(app.store, workspace.id))!.id
  let idsReal = true
  let slot = 0
  const path = route.path.replace(/:(\w+)/g, (_m, name: string) => {
    const choice = c.ids[slot++ % c.ids.length]!
    if (choice !== 'real') idsReal = false
    switch (choice) {
      case 'real': return real[name]!
      case 'unknown': return `${name === 'tokenId' ? 'tok' : name === 'workspaceId' ? 'ws' : 'con'}_0000000000000000000000`
      case 'nul': return 'con_%00'
      // Past the schema's 64 and up to the router's 100 (longer is the frameworkErrors case).
      case 'long': return 'x'.repeat(65 + (c.cut % 36))
      case 'arbitrary': {
        if (ENCODED_IDS.includes(c.arbitraryId)) return c.arbitraryId
        try { return encodeURIComponent(c.arbitraryId) } catch { return 'x' }
      }
    }
    return 'x'
  })
  const url = path + (c.query === null ? '' : `?${c.query}`)
  const rightAuth = route.auth === 'admin' ? `Bearer ${ADMIN_TOKEN}` : `Bearer ${workspace.token}`
  const authHeader: Record<AuthChoice, string | undefined> = {
    right: route.auth === 'none' ? undefined : rightAuth,
    none: undefined,
    'other-realm': route.auth === 'admin' ? `Bearer ${workspace.token}` : `Bearer ${ADMIN_TOKEN}`,
    basic: `Basic ${Buffer.from(`${workspace.token}:`).toString('base64')}`,
    garbage: c.garbageAuth
  }
  const headers: Record<string, string> = {}
  const authorization = authHeader[c.auth]
  if (authorization !== undefined) headers.authorization = authorization
  const payload = bodyText(route, c, fake.url)
  if (c.contentType === 'other') headers['content-type'] = c.otherType
  else if (c.contentType !== 'none') headers['content-type'] = CONTENT_TYPES[c.contentType]

  const sentBefore = fake.requests.length
  const response: LightMyRequestResponse = await app.inject({ method: method as 'GET', url, headers, ...(payload === undefined ? {} : { payload }) })
  const where = `${method} ${url.slice(0, 200)} [${route.name}; body ${c.body}; content-type ${headers['content-type'] ?? '(none)'}; auth ${c.auth}] -> ${response.statusCode} ${response.body.slice(0, 300)}`

  assert.equal(problemViolation(response, method), undefined, where)
  assert.equal(({} as Record<string, unknown>).polluted, undefined, `Object.prototype was polluted: ${where}`)

  const status = response.statusCode
  world.statuses.set(status, (world.statuses.get(status) ?? 0) + 1)
  // Another method on the same path may be another route (GET /v1/connections lists): judge the
  // request by the route it actually names, if any.
  const effective = routes.find((r) => r.path === route.path && (r.method === method || (r.method === 'GET' && method === 'HEAD')))
  const jsonType = c.contentType === 'json' || c.contentType === 'json-charset'
  const queryOk = c.query === null || (route.action !== undefined && (c.query === 'dryRun=true' || c.query === 'dryRun=false'))
  const authOk = route.auth === 'none' || c.auth === 'right'
  let parsed: unknown
  let parses = false
  if (payload !== undefined) {
    try { parsed = JSON.parse(payload); parses = true } catch {}
  }
  const bodyOk = effective?.body === undefined || (jsonType && parses && effective.body.check(parsed) && !poisoned(parsed))
  const requestOk = effective !== undefined && idsReal && authOk && (route.action !== undefined ? queryOk : true) && bodyOk

  if (status >= 200 && status < 300) {
    // Docs and ops routes take no input worth refusing; everything else must have been valid.
    assert.ok(effective !== undefined, `a 2xx for a method no route has: ${where}`)
    assert.ok(authOk, `a 2xx without the right credential: ${where}`)
    if (effective.body !== undefined || effective.path.includes(':')) assert.ok(requestOk, `a 2xx for an invalid request: ${where}`)
  } else if (status >= 300 && status < 400) {
    assert.ok(route.name === 'docs' && method !== 'POST', `a redirect outside /docs: ${where}`)
  }
  // A body-less route with a Content-Type but no body is a client error (empty JSON body, 415).
  if (c.body === 'valid' && effective === route && requestOk && c.query === null && (route.body !== undefined || c.contentType === 'none')) {
    assert.equal(status, route.ok, `a valid request did not get ${route.ok}: ${where}`)
  }

  // Forwarding integrity: only an accepted, non-dry action reaches Segment, exactly once, unchanged.
  if (route.action !== undefined) {
    // (No other method shares an action's path, so `effective` is the action or nothing.)
    const sent = fake.requests.length - sentBefore
    const forwarded = status === 200 && c.query !== 'dryRun=true'
    assert.equal(sent, forwarded ? 1 : 0, `upstream requests: ${where}`)
    if (forwarded) {
      const received = fake.requests.at(-1)!.body as Json
      const caller = parsed as Json
      if (route.action === 'batch') {
        assert.equal((received.batch as unknown[]).length, (caller.batch as unknown[]).length, where)
      } else {
        for (const [key, value] of Object.entries(caller)) {
          if (key === 'context' || key === 'sentAt') continue
          assert.deepEqual(received[key], value, `field ${key} changed on the way: ${where}`)
        }
      }
    }
  }
  // What a write answers is what a later read answers (stores must not alter names silently).
  if (status >= 200 && status < 300 && effective === route && route.body !== undefined && route.action === undefined) {
    const answered = response.json<Json>()
    if (route.name === 'create workspace') {
      const list = (await app.inject({ method: 'GET', url: '/v1/admin/workspaces', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json<{ workspaces: Json[] }>()
      assert.deepEqual(list.workspaces.find((w) => w.id === answered.id)?.name, answered.name, `stored name differs: ${where}`)
    } else {
      const { warnings: _warnings, ...view } = answered
      const read = await app.inject({ method: 'GET', url: `/v1/connections/${String(answered.id)}`, headers: workspace.auth })
      assert.deepEqual(read.json(), view, `a read differs from the write's answer: ${where}`)
    }
  }

  const health = await app.inject({ method: 'GET', url: '/healthz' })
  assert.equal(health.statusCode, 200, `/healthz after: ${where}`)
}

async function world (t: TestContext, env: Record<string, string> = {}): Promise<World> {
  const fake = await fakeSegment(t)
  // Both regions and the only allowed endpoint are the fake: nothing leaves the machine.
  const { app } = await build(t, {
    SEGMENT_API_URL: fake.url,
    SEGMENT_EU_API_URL: fake.url,
    SEGMENT_ALLOWED_ENDPOINTS: fake.url,
    RATE_LIMIT_MAX: '0',
    LOG_LEVEL: 'silent',
    ...STEADY_ENV,
    ...env
  })
  const workspace = await createWorkspace(app)
  const shared = await app.connections.create(workspace.id, { name: 'shared', writeKey: 'wk_fuzz_shared' })
  return { app, fake, workspace, sharedConnectionId: shared.id, statuses: new Map() }
}

interface Reporter {
  comment: (message: string) => void
  pass: (message: string) => void
  fail: (message: string) => void
}

async function check (t: Reporter, w: World, name: string, property: fc.IAsyncProperty<[Case]>, numRuns: number, timeLimitMs: number): Promise<void> {
  const started = Date.now()
  // Bounded in runs and in time, so a slow machine shortens the run instead of failing it.
  const details = await fc.check(property, { seed, numRuns, interruptAfterTimeLimit: timeLimitMs, markInterruptAsFailure: false })
  const statuses = [...w.statuses].sort(([a], [b]) => a - b).map(([status, count]) => `${status}×${count}`).join(' ')
  t.comment(`${name}: ${details.numRuns} runs in ${Date.now() - started} ms${details.interrupted ? ' (time limit)' : ''} (seed ${seed}); answers ${statuses}`)
  if (details.failed) {
    const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
    t.fail(`${name} failed with FUZZ_SEED=${seed}: ${error}\n${fc.defaultReportMessage(details) ?? ''}`)
  } else {
    t.pass(`${name}: ${details.numRuns} generated requests`)
  }
}

t.test('every route, every kind of bad input: no 5xx, problem documents, 2xx only when valid', async (t) => {
  const w = await world(t)
  await check(t, w, 'all routes', fc.asyncProperty(caseArbitrary(fc.nat({ max: routes.length - 1 })), async (c) => { await runCase(w, c) }), fuzzRuns(3000), fuzzRuns(16_000))
})

t.test('the six actions and dry runs, more often', async (t) => {
  const w = await world(t)
  const actionIndexes = routes.map((r, i) => r.action === undefined ? -1 : i).filter((i) => i >= 0)
  await check(t, w, 'actions', fc.asyncProperty(caseArbitrary(fc.constantFrom(...actionIndexes)), async (c) => { await runCase(w, c) }), fuzzRuns(1500), fuzzRuns(12_000))
})

t.test('fixed hostile bodies on every route with a body', async (t) => {
  const w = await world(t)
  const deep = (n: number): string => '{"a":'.repeat(n) + '1' + '}'.repeat(n)
  const hostile = [
    '['.repeat(10_000) + ']'.repeat(10_000),
    deep(10_000),
    `{"userId":"u","event":"e","name":"n","groupId":"g","previousId":"p","properties":${deep(10_000)},"traits":${deep(10_000)}}`,
    `{"batch":[{"type":"track","userId":"u","event":"e","properties":${deep(10_000)}}]}`,
    `{"batch":[{"type":"track","userId":"u","event":"e"}],"context":${deep(10_000)}}`,
    '{"userId":"\\ud800","event":"\\udfff","name":"\\u0000","groupId":"\\u202e","previousId":"\\ufeff","writeKey":"x"}',
    '{"userId":"u","userId":"","event":"e","event":""}',
    '{"__proto__":{"polluted":true},"userId":"u","event":"e"}',
    '{"constructor":{"prototype":{"polluted":true}},"userId":"u","event":"e"}',
    '{"batch":[{"type":"__proto__"},{"type":"constructor"},{"type":"toString"},{"type":"hasOwnProperty"}]}',
    '{"batch":' + JSON.stringify(Array.from({ length: 2501 }, () => ({ type: 'track', userId: 'u', event: 'e' }))) + '}',
    '{"name":' + JSON.stringify('x'.repeat(70_000)) + '}',
    '{"userId":"u","event":"e"', '{', '"', '', ' ', 'null', 'true', '0', '[]', '"{}"', '\u0000', '\ufeff{}', '{"a":1}garbage'
  ]
  const withBody = routes.filter((r) => r.body !== undefined)
  const violations: string[] = []
  let cases = 0
  for (const route of withBody) {
    const url = route.path.replace(':connectionId', w.sharedConnectionId)
    const auth = route.auth === 'admin' ? { authorization: `Bearer ${ADMIN_TOKEN}` } : w.workspace.auth
    for (const payload of hostile) {
      for (const contentType of ['application/json', 'text/plain', undefined]) {
        const method = route.method as 'POST'
        const sentBefore = w.fake.requests.length
        const response = await w.app.inject({ method, url, headers: { ...auth, ...(contentType === undefined ? {} : { 'content-type': contentType }) }, payload })
        const where = `${route.method} ${route.path} ${contentType ?? '(none)'} ${payload.slice(0, 80)} -> ${response.statusCode} ${response.body.slice(0, 200)}`
        const problem = problemViolation(response, method)
        if (problem !== undefined) violations.push(`${problem}: ${where}`)
        if (response.statusCode < 400 || response.statusCode >= 500) violations.push(`not refused: ${where}`)
        if (w.fake.requests.length !== sentBefore) violations.push(`sent upstream: ${where}`)
        cases++
      }
    }
  }
  t.same(violations, [], `${cases} hostile requests refused as problem documents, nothing sent`)
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched')
  t.equal((await w.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'still healthy')
})

t.test('URLs: invalid percent-encoding, odd methods and over-long paths answer as problems', async (t) => {
  const w = await world(t)
  const urls = ['/v1/connections/%', '/v1/connections/%zz', '/v1/connections/%E0%A4%A', '/v1/connections/%ED%A0%80/actions/track-event',
    '/%', '/docs/%', '/v1/admin/workspaces/%C0%AF/tokens', `/v1/connections/${'x'.repeat(200)}`]
  for (const url of urls) {
    for (const method of ['GET', 'POST', 'DELETE', 'HEAD'] as const) {
      const response = await w.app.inject({ method, url, headers: w.workspace.auth })
      t.equal(problemViolation(response, method), undefined, `${method} ${url.slice(0, 60)} -> ${response.statusCode} ${String(response.headers['content-type'])}`)
    }
  }
})

t.test('all routes on PostgreSQL', { skip: postgresSkip }, async (t) => {
  const { randomBytes } = await import('node:crypto')
  const w = await world(t, { DATABASE_URL: await freshPostgresUrl(t), ENCRYPTION_KEYS: `fuzz:${randomBytes(32).toString('base64')}` })
  await check(t, w, 'all routes (PostgreSQL)', fc.asyncProperty(caseArbitrary(fc.nat({ max: routes.length - 1 })), async (c) => { await runCase(w, c) }), fuzzRuns(1000), fuzzRuns(10_000))
})
