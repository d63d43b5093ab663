import { Type, type Static, type TProperties, type TString } from '@sinclair/typebox'

// Segment's call formats as request schemas. Validation runs in Fastify's ajv with
// { allErrors: true, coerceTypes: false, removeAdditional: false, discriminator: true } and
// ajv-formats. Segment's format is open, so unknown fields pass through; `writeKey` never does.
// Every schema is inline (no $id, no $ref) so the OpenAPI document shows it whole.

const NonEmpty = (description: string) => Type.String({ minLength: 1, description })
// `additionalProperties: true` changes nothing for validation (open is the default) but tells
// generators the object is open: without it openapi-typescript types these as Record<string, never>.
const JsonObject = (description: string) => Type.Object({}, { description, additionalProperties: true })

/** The message for a call that has neither `userId` nor `anonymousId` (see toFieldErrors). */
export const identityRuleMessage = 'must have userId or anonymousId (a non-empty string)'
/** The message for a `writeKey` in the body. */
export const writeKeyRuleMessage = 'must not be sent: the service authenticates with the connection\'s Write Key'
const identityNote = ' Needs a non-empty `userId` or `anonymousId` (or both).'

const Common = {
  userId: Type.Optional(NonEmpty('Your database id of the user.')),
  anonymousId: Type.Optional(NonEmpty('A pseudo-unique id for a user not yet known (a UUID is recommended).')),
  messageId: Type.Optional(Type.String({
    minLength: 1,
    maxLength: 100,
    description: 'Segment\'s deduplication key, unique across all of Segment. Generated when absent (derived from `Idempotency-Key` when that header is sent).'
  })),
  timestamp: Type.Optional(Type.String({ format: 'date-time', description: 'When the event happened, ISO-8601 with a time zone. Kept as given.' })),
  context: Type.Optional(JsonObject('Extra information about the event (ip, userAgent, locale, library, …), passed through unchanged except that `library` is set when absent.')),
  integrations: Type.Optional(JsonObject('Which destinations receive the event, e.g. `{"All": false, "Mixpanel": true}`. Passed through unchanged.')),
  writeKey: Type.Optional(Type.Never({ description: 'Not allowed: the Write Key is the connection\'s and is sent in the Authorization header.' }))
}

/**
 * The identity rule of a single call as a union of two whole objects, one with `userId` required
 * and one with `anonymousId` required: generators (openapi-typescript) keep it as a union type,
 * where an `anyOf` of branches that only list `required` becomes `unknown`. Validation is as
 * strict as before; toFieldErrors folds the per-branch errors back into one list.
 */
function identified<P extends TProperties> (properties: P, options: { title: string, description: string, examples: unknown[] }) {
  const branch = <K extends 'userId' | 'anonymousId'>(key: K, label: string) => Type.Object({
    ...properties,
    [key]: NonEmpty(properties[key]?.description ?? '')
  } as Omit<P, K> & { [Q in K]: TString }, { title: `${options.title} (${label})` })
  return Type.Union([branch('userId', 'by userId'), branch('anonymousId', 'by anonymousId')], {
    title: options.title,
    description: options.description + identityNote,
    examples: options.examples
  })
}

/**
 * A call inside a batch: one object whose `type` the batch's discriminator reads. The identity
 * rule stays a plain `anyOf` of `required` lists inside an `allOf`, which generators ignore
 * (the description says it); a union here would hide `type` from the discriminator.
 */
function item<P extends TProperties> (properties: P, options: { title: string, description: string, identity: boolean }) {
  return Type.Object(properties, {
    title: options.title,
    description: options.description + (options.identity ? identityNote : ''),
    ...(options.identity ? { allOf: [{ anyOf: [{ required: ['userId'] }, { required: ['anonymousId'] }] }] } : {})
  })
}

const sentAtNote = ' A `sentAt` is set at send time (any given one is replaced).'

const trackFields = {
  ...Common,
  event: NonEmpty('The name of the action, e.g. "Order Completed".'),
  properties: Type.Optional(JsonObject('Free-form properties of the event; `revenue`, `currency` and `value` are reserved.'))
}
const identifyFields = {
  ...Common,
  traits: Type.Optional(JsonObject('Traits of the user, e.g. email, name, plan.'))
}
const groupFields = {
  ...Common,
  groupId: NonEmpty('Your database id of the group (account, company).'),
  traits: Type.Optional(JsonObject('Traits of the group, e.g. name, industry, employees.'))
}
const pageFields = {
  ...Common,
  name: Type.Optional(NonEmpty('The page name.')),
  category: Type.Optional(NonEmpty('The page category.')),
  properties: Type.Optional(JsonObject('Properties of the page: url, path, referrer, title, search, …'))
}
const screenFields = {
  ...Common,
  name: Type.Optional(NonEmpty('The screen name.')),
  category: Type.Optional(NonEmpty('The screen category.')),
  properties: Type.Optional(JsonObject('Properties of the screen.'))
}
const { anonymousId: _anonymousId, userId: _userId, ...aliasCommon } = Common
const aliasFields = {
  ...aliasCommon,
  previousId: NonEmpty('The previous id of the user: an anonymousId or an earlier userId.'),
  userId: NonEmpty('The new id of the user.'),
  anonymousId: Type.Optional(NonEmpty('Not part of Segment\'s alias call; passed through if given.'))
}

// On a single call the path gives the type; a `type` that says otherwise is an error, not a guess.
const typeOf = <T extends string>(type: T, required: boolean) => {
  const literal = Type.Literal(type, { description: required ? 'The call type.' : `Optional; when given it must be "${type}".` })
  return required ? literal : Type.Optional(literal)
}

const ts = '2025-03-14T09:26:53.589Z'
const trackExample = {
  userId: 'user_8f2a61',
  event: 'Order Completed',
  properties: { orderId: 'ord_50314', revenue: 129.9, currency: 'EUR', products: [{ sku: 'SKU-42', quantity: 2, price: 64.95 }] },
  context: { ip: '203.0.113.7', locale: 'fr-FR' },
  timestamp: ts
}
const identifyExample = {
  userId: 'user_8f2a61',
  traits: { email: 'camille.durand@example.com', firstName: 'Camille', lastName: 'Durand', plan: 'pro' },
  timestamp: ts
}
const groupExample = {
  userId: 'user_8f2a61',
  groupId: 'acct_1170',
  traits: { name: 'Initech', industry: 'Software', employees: 120 }
}
const pageExample = {
  anonymousId: '3c5b8e2e-8d5b-4c1e-9a4e-1f0e2b7f8a11',
  name: 'Pricing',
  category: 'Marketing',
  properties: { url: 'https://www.example.com/pricing', path: '/pricing', referrer: 'https://www.google.com/', title: 'Pricing – Example' }
}
const screenExample = { userId: 'user_8f2a61', name: 'Checkout', properties: { step: 2 } }
const aliasExample = { previousId: '3c5b8e2e-8d5b-4c1e-9a4e-1f0e2b7f8a11', userId: 'user_8f2a61' }

export const TrackBody = identified({ type: typeOf('track', false), ...trackFields }, {
  title: 'Track call',
  examples: [trackExample],
  description: 'A Segment track call: an action the user performed. Needs `event`.' + sentAtNote
})
export const IdentifyBody = identified({ type: typeOf('identify', false), ...identifyFields }, {
  title: 'Identify call',
  examples: [identifyExample],
  description: 'A Segment identify call: who the user is, with traits.' + sentAtNote
})
export const GroupBody = identified({ type: typeOf('group', false), ...groupFields }, {
  title: 'Group call',
  examples: [groupExample],
  description: 'A Segment group call: ties the user to a group (account, company). Needs `groupId`.' + sentAtNote
})
export const PageBody = identified({ type: typeOf('page', false), ...pageFields }, {
  title: 'Page call',
  examples: [pageExample],
  description: 'A Segment page call: a web page view.' + sentAtNote
})
export const AliasBody = Type.Object({ type: typeOf('alias', false), ...aliasFields }, {
  title: 'Alias call',
  examples: [aliasExample],
  description: 'A Segment alias call: merges a previous id into a user id. Needs `previousId` and `userId`.' + sentAtNote
})

const TrackItem = item({ type: typeOf('track', true), ...trackFields }, { identity: true, title: 'Track item', description: 'A track call in a batch.' })
const IdentifyItem = item({ type: typeOf('identify', true), ...identifyFields }, { identity: true, title: 'Identify item', description: 'An identify call in a batch.' })
const GroupItem = item({ type: typeOf('group', true), ...groupFields }, { identity: true, title: 'Group item', description: 'A group call in a batch.' })
const PageItem = item({ type: typeOf('page', true), ...pageFields }, { identity: true, title: 'Page item', description: 'A page call in a batch.' })
const ScreenItem = item({ type: typeOf('screen', true), ...screenFields }, { identity: true, title: 'Screen item', description: 'A screen call in a batch.' })
const AliasItem = item({ type: typeOf('alias', true), ...aliasFields }, { identity: false, title: 'Alias item', description: 'An alias call in a batch.' })

// oneOf + discriminator (OpenAPI 3.0 style; ajv option `discriminator: true`): ajv validates an item
// only against the branch its `type` names, so errors are about that branch alone.
const itemBranches = [TrackItem, IdentifyItem, GroupItem, PageItem, ScreenItem, AliasItem]
type BatchItemType = Static<typeof TrackItem> | Static<typeof IdentifyItem> | Static<typeof GroupItem> |
  Static<typeof PageItem> | Static<typeof ScreenItem> | Static<typeof AliasItem>
export const BatchItem = Type.Unsafe<BatchItemType>({
  title: 'Batch item',
  description: 'One call; `type` says which, and the item follows that call\'s rules.',
  type: 'object',
  discriminator: { propertyName: 'type' },
  oneOf: itemBranches
})

export const BatchBody = Type.Object({
  batch: Type.Array(BatchItem, { minItems: 1, maxItems: 2500, description: '1 to 2,500 calls, sent in this order.' }),
  context: Type.Optional(JsonObject('Merged by Segment into every item\'s context (the item wins); a `library` here stands for all items.')),
  integrations: Type.Optional(JsonObject('Merged by Segment into every item\'s integrations (the item wins).')),
  writeKey: Common.writeKey
}, {
  title: 'Batch',
  description: 'Several calls in one Segment request (`/v1/batch`). A `sentAt` is set at send time at the top level.',
  examples: [{
    batch: [
      { type: 'identify', ...identifyExample },
      { type: 'track', ...trackExample },
      { type: 'page', ...pageExample },
      { type: 'screen', ...screenExample }
    ],
    context: { library: { name: 'taskjuice-workflow', version: '2.4.0' } }
  }]
})

export type TrackCall = Static<typeof TrackBody>
export type IdentifyCall = Static<typeof IdentifyBody>
export type GroupCall = Static<typeof GroupBody>
export type PageCall = Static<typeof PageBody>
export type AliasCall = Static<typeof AliasBody>
export type BatchItemCall = Static<typeof BatchItem>
export type BatchCall = Static<typeof BatchBody>

const accepted = 'Segment took the payload (it answered 2xx), not that destinations processed it: Segment may still drop events after accepting them (see its Debugger).'

const AnswerCommon = {
  status: Type.Union([Type.Literal('accepted'), Type.Literal('validated')], {
    description: `"accepted" means ${accepted} "validated": a dry run; the body was built and measured, nothing was sent.`
  }),
  bytes: Type.Integer({ minimum: 0, description: 'UTF-8 bytes of the body sent (or that would be sent) to Segment for this call alone, also when it went joined with others in one /v1/batch.' }),
  attempts: Type.Integer({ minimum: 0, description: 'Attempts of the upstream request that carried the call, retries included (plus those of a joined request Segment refused before the call was resent alone); 0 on a dry run.' }),
  upstreamStatus: Type.Optional(Type.Integer({ description: 'The HTTP status Segment answered to the upstream request that carried the call; absent on a dry run.' }))
}

export const ActionAccepted = Type.Object({
  status: AnswerCommon.status,
  action: Type.String({ description: 'The action performed.' }),
  messageId: Type.String({ description: 'The messageId of the event: the caller\'s or a generated one.' }),
  bytes: AnswerCommon.bytes,
  attempts: AnswerCommon.attempts,
  upstreamStatus: AnswerCommon.upstreamStatus
}, {
  title: 'Action accepted',
  description: `The answer to a single call. "accepted" means ${accepted}`,
  examples: [{ status: 'accepted', action: 'track-event', messageId: 'sfw-6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d', bytes: 412, attempts: 1, upstreamStatus: 200 }]
})

export const BatchAccepted = Type.Object({
  status: AnswerCommon.status,
  action: Type.Literal('batch-send', { description: 'The action performed.' }),
  messageIds: Type.Array(Type.String(), { description: 'The messageId of each item, in item order.' }),
  count: Type.Integer({ minimum: 1, description: 'The number of items sent.' }),
  bytes: AnswerCommon.bytes,
  attempts: AnswerCommon.attempts,
  upstreamStatus: AnswerCommon.upstreamStatus
}, {
  title: 'Batch accepted',
  description: `The answer to a batch. "accepted" means ${accepted}`,
  examples: [{ status: 'accepted', action: 'batch-send', messageIds: ['sfw-6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d', 'order-50314'], count: 2, bytes: 903, attempts: 1, upstreamStatus: 200 }]
})

export type ActionAcceptedReply = Static<typeof ActionAccepted>
export type BatchAcceptedReply = Static<typeof BatchAccepted>

/** The parts of an ajv ErrorObject that segmentRuleMessage reads. */
export interface SchemaErrorLike {
  keyword: string
  instancePath: string
  schemaPath: string
  params: Record<string, unknown>
}

const identityBranch = /\/anyOf\/([01])\/required$/
const identityKeys = ['userId', 'anonymousId']

/** Whether `error` is the identity rule's `required` in its branch (0: userId, 1: anonymousId). */
function identityRequired (error: SchemaErrorLike): boolean {
  const branch = error.keyword === 'required' ? identityBranch.exec(error.schemaPath)?.[1] : undefined
  return branch !== undefined && error.params.missingProperty === identityKeys[Number(branch)]
}

/**
 * The instance paths of calls that have neither `userId` nor `anonymousId`: both branches of the
 * identity rule failed there for want of their key (and not for some other field).
 */
export function identityMissingAt (errors: SchemaErrorLike[]): Set<string> {
  const seen = new Map<string, number>()
  for (const error of errors) {
    if (identityRequired(error)) seen.set(error.instancePath, (seen.get(error.instancePath) ?? 0) | (1 << Number(identityBranch.exec(error.schemaPath)![1])))
  }
  return new Set([...seen].filter(([, branches]) => branches === 3).map(([path]) => path))
}

/**
 * Maps the errors raised by the Segment rules that these schemas encode with plain JSON Schema:
 * returns the message to report at `instancePath`, `null` for an error that is only a by-product
 * of such a rule (drop it), and `undefined` for any other error (map it generically).
 * - identity: ajv reports `anyOf` at the call plus, per branch, its own errors; the branch's
 *   missing `userId` / `anonymousId` is dropped, and the `anyOf` becomes the rule's one message
 *   only where both keys are missing (`missing`, from identityMissingAt); elsewhere the other
 *   errors (reported once per branch, deduplicated by the caller) say what is wrong.
 * - writeKey: `not` at `/writeKey`.
 * - batch item `type`: `discriminator` at the item.
 */
export function segmentRuleMessage (error: SchemaErrorLike, missing: Set<string>): string | null | undefined {
  if (error.keyword === 'anyOf' && error.schemaPath.endsWith('/anyOf')) return missing.has(error.instancePath) ? identityRuleMessage : null
  if (identityRequired(error)) return null
  if (error.keyword === 'not' && error.instancePath.endsWith('/writeKey')) return writeKeyRuleMessage
  if (error.keyword === 'discriminator') {
    return error.params.error === 'mapping'
      ? 'type must be one of track, identify, group, page, screen, alias'
      : 'must have type (one of track, identify, group, page, screen, alias)'
  }
  return undefined
}
