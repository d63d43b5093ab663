import t from 'tap'
import { Ajv, type ErrorObject } from 'ajv'
import ajvFormats from 'ajv-formats'
import { actions } from '../src/segment/actions.js'
import { ActionAccepted, BatchAccepted, BatchBody, identityMissingAt, identityRuleMessage, segmentRuleMessage, writeKeyRuleMessage } from '../src/segment/schemas.js'

// The ajv options the app's validator must use (see schemas.ts).
const ajv = new Ajv({ allErrors: true, coerceTypes: false, removeAdditional: false, discriminator: true })
// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = ((ajvFormats as unknown as { default?: unknown }).default ?? ajvFormats) as (ajv: Ajv) => Ajv
addFormats(ajv)

// Ajv errors as the app will report them: { path, message } with the rule messages applied, each
// once (a union's branches report the same error each).
function errors (schema: object, body: unknown): Array<{ path: string, keyword: string, message: string }> {
  const validate = ajv.compile(schema)
  if (validate(body)) return []
  const all = validate.errors as ErrorObject[]
  const missing = identityMissingAt(all)
  const out = new Map<string, { path: string, keyword: string, message: string }>()
  for (const error of all) {
    const rule = segmentRuleMessage(error, missing)
    if (rule === null) continue
    const path = error.keyword === 'required' ? `${error.instancePath}/${String(error.params.missingProperty)}` : error.instancePath
    const entry = { path, keyword: error.keyword, message: rule ?? error.message ?? '' }
    out.set(JSON.stringify(entry), entry)
  }
  return [...out.values()]
}

t.test('every action schema compiles and accepts its own examples', async (t) => {
  for (const [name, action] of Object.entries(actions)) {
    const examples = (action.body as { examples?: unknown[] }).examples ?? []
    t.ok(examples.length > 0, `${name} has examples`)
    for (const example of examples) t.same(errors(action.body, example), [], `${name} example is valid`)
    t.ok((action.body as { title?: string }).title, `${name} has a title`)
    t.notOk(JSON.stringify(action.body).includes('"$ref"'), `${name} is inline`)
  }
  ajv.compile(ActionAccepted)
  ajv.compile(BatchAccepted)
})

t.test('identity: userId or anonymousId, one clear error', async (t) => {
  for (const name of ['track-event', 'identify-user', 'group-user', 'page-view'] as const) {
    const body = name === 'track-event' ? { event: 'e' } : name === 'group-user' ? { groupId: 'g' } : {}
    t.same(errors(actions[name].body, body), [{ path: '', keyword: 'anyOf', message: identityRuleMessage }], name)
    t.same(errors(actions[name].body, { ...body, anonymousId: 'a' }), [], `${name} with anonymousId`)
  }
  t.match(errors(actions['identify-user'].body, { userId: '' }), [{ path: '/userId', keyword: 'minLength' }], 'empty is not an id')
  t.match(errors(actions['identify-user'].body, { userId: 42 }), [{ path: '/userId', keyword: 'type' }], 'no coercion')
})

t.test('per-action required fields', async (t) => {
  t.match(errors(actions['track-event'].body, { userId: 'u' }), [{ path: '/event', keyword: 'required' }])
  t.match(errors(actions['track-event'].body, { userId: 'u', event: '' }), [{ path: '/event', keyword: 'minLength' }])
  t.match(errors(actions['group-user'].body, { userId: 'u' }), [{ path: '/groupId', keyword: 'required' }])
  t.same(errors(actions['alias-user'].body, {}).map((e) => e.path).sort(), ['/previousId', '/userId'])
  t.same(errors(actions['alias-user'].body, { previousId: 'p', userId: 'u' }), [])
})

t.test('field types and formats', async (t) => {
  const body = {
    userId: 'u',
    event: 'e',
    properties: [],
    context: 'x',
    integrations: null,
    timestamp: 'yesterday',
    messageId: 'm'.repeat(101)
  }
  t.same(errors(actions['track-event'].body, body).map((e) => e.path).sort(), ['/context', '/integrations', '/messageId', '/properties', '/timestamp'])
  t.same(errors(actions['track-event'].body, { userId: 'u', event: 'e', timestamp: '2025-01-01T10:00:00.123+02:00', messageId: 'm'.repeat(100) }), [])
  t.match(errors(actions['track-event'].body, { userId: 'u', event: 'e', timestamp: '2025-01-01T10:00:00' }), [{ path: '/timestamp', keyword: 'format' }], 'a time zone is required')
  t.match(errors(actions['identify-user'].body, { userId: 'u', traits: 'vip' }), [{ path: '/traits' }])
  t.match(errors(actions['page-view'].body, { userId: 'u', name: '', category: '' }), [{ path: '/name' }, { path: '/category' }])
  t.same(errors(actions['page-view'].body, { userId: 'u', name: 'Home', category: 'Docs' }), [])
})

t.test('unknown fields pass; writeKey never does', async (t) => {
  t.same(errors(actions['track-event'].body, { userId: 'u', event: 'e', channel: 'server', custom: { a: 1 } }), [])
  t.same(errors(actions['track-event'].body, { userId: 'u', event: 'e', writeKey: 'k' }), [{ path: '/writeKey', keyword: 'not', message: writeKeyRuleMessage }])
  t.same(errors(BatchBody, { batch: [{ type: 'track', userId: 'u', event: 'e', writeKey: 'k' }], writeKey: 'k' }).map((e) => e.path).sort(), ['/batch/0/writeKey', '/writeKey'])
  t.same(errors(actions['alias-user'].body, { previousId: 'p', userId: 'u', writeKey: '' }).map((e) => e.path), ['/writeKey'])
})

t.test('a single call\'s type must match its action', async (t) => {
  t.same(errors(actions['track-event'].body, { type: 'track', userId: 'u', event: 'e' }), [])
  t.match(errors(actions['track-event'].body, { type: 'identify', userId: 'u', event: 'e' }), [{ path: '/type', keyword: 'const' }])
})

t.test('batch: only the branch named by type reports, at the item\'s path', async (t) => {
  const valid = { type: 'identify', userId: 'u' }
  const body = {
    batch: [
      valid,
      { type: 'track', userId: 'u', event: 'e' },
      { type: 'group', anonymousId: 'a', groupId: 'g' },
      { type: 'track', userId: 'u' },
      { type: 'screen', name: 'Home' },
      { type: 'alias', userId: 'u' },
      { type: 'purchase', userId: 'u' },
      { userId: 'u', event: 'e' },
      { type: 'page', userId: 'u', name: '' }
    ]
  }
  t.same(errors(BatchBody, body), [
    { path: '/batch/3/event', keyword: 'required', message: 'must have required property \'event\'' },
    { path: '/batch/4', keyword: 'anyOf', message: identityRuleMessage },
    { path: '/batch/5/previousId', keyword: 'required', message: 'must have required property \'previousId\'' },
    { path: '/batch/6', keyword: 'discriminator', message: 'type must be one of track, identify, group, page, screen, alias' },
    { path: '/batch/7', keyword: 'discriminator', message: 'must have type (one of track, identify, group, page, screen, alias)' },
    { path: '/batch/8/name', keyword: 'minLength', message: 'must NOT have fewer than 1 characters' }
  ])
})

t.test('batch size and top-level fields', async (t) => {
  const item = { type: 'identify', userId: 'u' }
  t.match(errors(BatchBody, { batch: [] }), [{ path: '/batch', keyword: 'minItems' }])
  t.match(errors(BatchBody, {}), [{ path: '/batch', keyword: 'required' }])
  t.same(errors(BatchBody, { batch: Array.from({ length: 2500 }, () => item) }), [])
  t.match(errors(BatchBody, { batch: Array.from({ length: 2501 }, () => item) }), [{ path: '/batch', keyword: 'maxItems' }])
  t.same(errors(BatchBody, { batch: [item], context: { library: { name: 'x' } }, integrations: { All: true }, extra: 1 }), [])
  t.same(errors(BatchBody, { batch: [item], context: [], integrations: 'all' }).map((e) => e.path), ['/context', '/integrations'])
})

t.test('answers say what "accepted" means', async (t) => {
  t.match(ActionAccepted.description, /"accepted" means Segment took the payload .*, not that destinations processed it/)
  t.match(BatchAccepted.description, /"accepted" means Segment took the payload .*, not that destinations processed it/)
  t.same(Object.keys(BatchAccepted.properties).sort(), ['action', 'attempts', 'bytes', 'count', 'messageIds', 'status', 'upstreamStatus'])
  t.same(ActionAccepted.required.sort(), ['action', 'attempts', 'bytes', 'messageId', 'status'])
})
