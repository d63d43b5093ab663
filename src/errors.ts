import { Type, type Static } from '@sinclair/typebox'

// The table of coded errors. Clients branch on `code`; `title` is fixed per code; `detail` is per
// occurrence. Answers are RFC 9457 problem documents (see plugins/errors.ts).
export const errorTable = {
  invalid_request: { status: 400, title: 'Invalid request' },
  endpoint_not_allowed: { status: 400, title: 'Endpoint not allowed' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  not_found: { status: 404, title: 'Not found' },
  workspace_not_found: { status: 404, title: 'Workspace not found' },
  token_not_found: { status: 404, title: 'Token not found' },
  connection_not_found: { status: 404, title: 'Connection not found' },
  delivery_not_found: { status: 404, title: 'Delivery not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  idempotency_key_in_use: { status: 409, title: 'Idempotency-Key in use' },
  deliveries_pending: { status: 409, title: 'Deliveries pending' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  idempotency_key_reused: { status: 422, title: 'Idempotency-Key reused' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal_error: { status: 500, title: 'Internal error' },
  segment_rejected: { status: 502, title: 'Segment rejected the request' },
  segment_auth_failed: { status: 502, title: 'Segment refused the OAuth client assertion' },
  segment_unavailable: { status: 503, title: 'Segment unavailable' },
  queue_full: { status: 503, title: 'Queue full' },
  overloaded: { status: 503, title: 'Service overloaded' },
  store_unavailable: { status: 503, title: 'Store unavailable' },
  not_ready: { status: 503, title: 'Not ready' },
  key_unavailable: { status: 503, title: 'Encryption key unavailable' },
  segment_timeout: { status: 504, title: 'Segment timed out' }
} as const

export type ErrorCode = keyof typeof errorTable

// The problem document as a schema: one definition for serialisation and for the OpenAPI text.
export const FieldErrorSchema = Type.Object({
  path: Type.String({ description: 'JSON Pointer into the request body', examples: ['/batch/3/event'] }),
  message: Type.String()
})

export const ProblemSchema = Type.Object({
  type: Type.String({ examples: ['about:blank'] }),
  status: Type.Integer(),
  code: Type.String({ enum: Object.keys(errorTable), description: 'Stable machine-readable error code; branch on this.' }),
  title: Type.String(),
  detail: Type.String(),
  errors: Type.Optional(Type.Array(FieldErrorSchema, { description: 'Every problem found (invalid_request)' })),
  limit: Type.Optional(Type.Integer({ description: 'The byte limit that was exceeded (payload_too_large)' })),
  size: Type.Optional(Type.Integer({ description: 'The measured size in bytes (payload_too_large)' })),
  index: Type.Optional(Type.Integer({ description: 'The batch item that caused the error' })),
  largestFields: Type.Optional(Type.Array(Type.Object({ path: Type.String(), bytes: Type.Integer() }), {
    description: 'The biggest top-level fields of the offending event or body, biggest first'
  })),
  upstreamStatus: Type.Optional(Type.Integer({ description: 'The status Segment answered' })),
  upstreamBody: Type.Optional(Type.String({ description: 'A short excerpt of Segment\'s answer' })),
  attempts: Type.Optional(Type.Integer({ description: 'Attempts made upstream' })),
  messageId: Type.Optional(Type.String({
    description: 'segment_rejected, segment_unavailable and segment_timeout of a single call: the messageId that was sent and may have reached Segment. A resend with this messageId (or with the same Idempotency-Key) is dropped by Segment as a duplicate.'
  })),
  messageIds: Type.Optional(Type.Array(Type.String(), {
    description: 'The same for batch-send: the messageId of each item, in item order.'
  })),
  oauthError: Type.Optional(Type.String({ description: 'OAuth sources: the `error` code Segment\'s token endpoint answered (segment_auth_failed), e.g. invalid_client', examples: ['invalid_client'] })),
  pending: Type.Optional(Type.Integer({ description: 'Queued deliveries that block the delete (deliveries_pending)' }))
}, { $id: 'Problem', title: 'Problem', description: 'RFC 9457 problem details', additionalProperties: true })

/** A problem with one field: `path` is a JSON Pointer into the request body, e.g. `/batch/3/event`. */
export type FieldError = Static<typeof FieldErrorSchema>

/** Extra members of the problem document, beside type, status, code, title and detail. */
export type ProblemExtras = Partial<Omit<Static<typeof ProblemSchema>, 'type' | 'status' | 'code' | 'title' | 'detail'>>

export class AppError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly extras: ProblemExtras
  /** Seconds, sent as `Retry-After` when set. */
  readonly retryAfter: number | undefined

  constructor (code: ErrorCode, detail: string, extras: ProblemExtras = {}, retryAfter?: number, options?: ErrorOptions) {
    super(detail, options)
    this.name = 'AppError'
    this.code = code
    this.status = errorTable[code].status
    this.extras = extras
    this.retryAfter = retryAfter
  }
}

export function problemBody (error: AppError): Record<string, unknown> {
  return {
    type: 'about:blank',
    status: error.status,
    code: error.code,
    title: errorTable[error.code].title,
    detail: error.message,
    ...error.extras
  }
}

/** Response schemas for the given error statuses, as application/problem+json (ProblemSchema is a shared schema, see plugins/errors.ts). */
export function problemResponses (...statuses: number[]): Record<number, unknown> {
  const responses: Record<number, unknown> = {}
  for (const status of statuses) {
    const codes = Object.entries(errorTable).filter(([, entry]) => entry.status === status).map(([code]) => code)
    responses[status] = {
      description: `Error: ${codes.join(', ')}`,
      content: { 'application/problem+json': { schema: { $ref: 'Problem#' } } }
    }
  }
  return responses
}
