import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify'
import { AppError, ProblemSchema, problemBody, type FieldError } from '../errors.js'
import { StoreUnavailableError } from '../store/store.js'
import { identityMissingAt, segmentRuleMessage } from '../segment/schemas.js'
import { discardRestOfBody } from '../discard-body.js'

/** ajv's errors as `{path, message}` with the path pointing at the field itself. */
export function toFieldErrors (validation: FastifySchemaValidationError[], part: string): FieldError[] {
  const prefix = part === 'body' ? '' : `${part} `
  const seen = new Set<string>()
  const out: FieldError[] = []
  const missing = identityMissingAt(validation as Array<FastifySchemaValidationError & { params: Record<string, unknown> }>)
  for (const error of validation) {
    const params = error.params as Record<string, unknown>
    let path = error.instancePath
    let message = error.message ?? 'is invalid'
    const ruleMessage = segmentRuleMessage({ keyword: error.keyword, instancePath: error.instancePath, schemaPath: error.schemaPath, params }, missing)
    if (ruleMessage === null) continue
    if (ruleMessage !== undefined) {
      message = ruleMessage
    } else if (error.keyword === 'required' && typeof params.missingProperty === 'string') {
      path = `${path}/${escapePointer(params.missingProperty)}`
      message = 'is required'
    } else if (error.keyword === 'additionalProperties' && typeof params.additionalProperty === 'string') {
      path = `${path}/${escapePointer(params.additionalProperty)}`
      message = 'is not allowed'
    } else if (error.keyword === 'not' && typeof params.forbiddenProperty === 'string') {
      path = `${path}/${escapePointer(params.forbiddenProperty)}`
      message = 'is not allowed'
    }
    const entry = { path, message: `${prefix}${message}` }
    const key = `${entry.path}\0${entry.message}`
    if (!seen.has(key)) {
      seen.add(key)
      out.push(entry)
    }
  }
  return out
}

function escapePointer (segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1')
}

/** Any thrown value as a coded AppError; unknown errors become a terse 500. */
export function toAppError (error: FastifyError | Error): AppError {
  if (error instanceof AppError) return error
  if (error instanceof StoreUnavailableError) return new AppError('store_unavailable', 'the store is unavailable; retry shortly', {}, 1)
  const fastifyError = error as FastifyError
  if (fastifyError.validation !== undefined) {
    const errors = toFieldErrors(fastifyError.validation, fastifyError.validationContext ?? 'body')
    return new AppError('invalid_request', `the request has ${errors.length} problem${errors.length === 1 ? '' : 's'}`, { errors })
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('payload_too_large', 'the request body is larger than this route accepts')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('unsupported_media_type', 'send the body as application/json')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('invalid_request', 'the JSON body is empty', { errors: [{ path: '', message: 'is empty' }] })
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('invalid_request', 'Content-Length does not match the body')
    case 'FST_ERR_BAD_URL':
      return new AppError('invalid_request', 'the URL is not valid (bad percent-encoding)')
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AppError('invalid_request', 'a path segment of the URL is too long')
  }
  const status = fastifyError.statusCode
  if (status === 400) {
    // Malformed JSON, prototype-poisoning keys and the like: the parser's message, which holds no secrets.
    return new AppError('invalid_request', `the body is not valid JSON: ${fastifyError.message}`, { errors: [{ path: '', message: 'is not valid JSON' }] })
  }
  if (status === 404) return new AppError('not_found', 'no such route')
  if (status === 405) return new AppError('method_not_allowed', 'method not allowed')
  if (status === 429) return new AppError('rate_limited', 'too many requests')
  return new AppError('internal_error', 'an internal error occurred; it has been logged')
}

export function sendProblem (reply: FastifyReply, error: AppError): FastifyReply {
  if (error.retryAfter !== undefined) reply.header('retry-after', String(Math.max(1, Math.ceil(error.retryAfter))))
  return reply.code(error.status).type('application/problem+json').send(problemBody(error))
}

/**
 * Fastify's `frameworkErrors` server option: URLs the router refuses before any route or hook
 * (invalid percent-encoding, over-long path parameters) answer as problem documents too, instead
 * of Fastify's own JSON that echoes the URL.
 */
export function frameworkErrors (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const appError = toAppError(error)
  // No hook runs for these, so this is the request's one log line.
  request.log.info({ method: request.method, route: 'unmatched', statusCode: appError.status, code: appError.code }, 'request completed')
  sendProblem(reply, appError)
}

export default fp(async (app) => {
  app.addSchema(ProblemSchema)
  app.setErrorHandler(async (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const appError = toAppError(error)
    if (appError.code === 'internal_error' || appError.code === 'store_unavailable' || appError.code === 'key_unavailable') {
      // The log gets the cause and stack; the body stays terse. Coded upstream outcomes need no
      // second line: the request's own line carries code, upstreamStatus and attempts.
      request.log.error({ err: error, code: appError.code }, 'request failed')
    }
    const { upstreamStatus, attempts } = appError.extras
    if (request.logFields !== null) {
      request.logFields.code = appError.code
      if (upstreamStatus !== undefined) request.logFields.upstreamStatus = upstreamStatus
      if (attempts !== undefined) request.logFields.attempts = attempts
    }
    // Refused before its body was read (too large, bad token, wrong type): let the client finish
    // sending (within a bound), so it can read this answer.
    if (await discardRestOfBody(request.raw) === 'bound') reply.header('connection', 'close')
    return sendProblem(reply, appError)
  })

  app.setNotFoundHandler((_request, reply) => sendProblem(reply, new AppError('not_found', 'no such route')))
}, { name: 'errors' })
