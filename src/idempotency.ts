import { createHash, randomUUID } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from './errors.js'
import type { IdempotencyKeyId, Store } from './store/store.js'

// Idempotency-Key as the IETF httpapi draft "The Idempotency-Key HTTP Header Field" has it, kept
// in the store so that every replica sees every key (design/api.md, Actions):
// - a key is remembered per workspace, connection and action, with a fingerprint of the body,
//   for 24 hours once its request ended in a 2xx;
// - the same key and body again: that answer again, nothing sent; another body: 422; while the
//   first request runs (on any replica): 409; a request that ended in an error is forgotten.
// A running request holds the key under a lease, so a replica that dies mid-request blocks the
// key only until the lease runs out.
//
// Nothing of the caller's is stored readably: the key as a SHA-256, the body as a SHA-256
// fingerprint over the key's scope and the canonical body, and the answer as numbers only. The
// messageIds of a replay are rebuilt from the replayed body, which is the same body: generated
// ids derive from the key and the item index, and the caller's own ids are in the body.

/** How long a finished key is remembered (the draft's and Segment's deduplication window). */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000
// Expired rows are taken over when their key comes again; the rest go in bounded batches on keyed
// requests: at most one batch a minute per replica, or one per request while a full batch shows
// that more are waiting (so purging keeps up with any rate of keys).
const PURGE_EVERY_MS = 60_000
const PURGE_LIMIT = 500
const KEY_DOMAIN = 'segment-forwarder/idempotency-key/v1'
const FINGERPRINT_DOMAIN = 'segment-forwarder/idempotency-fingerprint/v1'

/** What a remembered answer holds besides its messageIds: numbers only. */
export const RememberedAnswerSchema = Type.Object({
  bytes: Type.Integer(),
  attempts: Type.Integer(),
  upstreamStatus: Type.Integer()
}, { additionalProperties: false })
export type RememberedAnswer = Static<typeof RememberedAnswerSchema>

export interface IdempotencyScope {
  workspaceId: string
  connectionId: string
  action: string
  key: string
}

/** A claimed key: the request runs, then complete() or release() settles it. */
export interface IdempotencyTicket {
  id: IdempotencyKeyId
  owner: string
}

export type IdempotencyStart =
  | { replay: RememberedAnswer }
  | { replay: undefined, ticket: IdempotencyTicket }

export interface IdempotencyOptions {
  /** How long a running request holds its key: longer than any request can run. */
  leaseMs: number
  /** Rows per purge batch (default 500). */
  purgeLimit?: number
}

export class Idempotency {
  readonly #store: Store
  readonly #options: IdempotencyOptions
  #lastPurge = Number.NEGATIVE_INFINITY

  constructor (store: Store, options: IdempotencyOptions) {
    this.#store = store
    this.#options = options
  }

  /**
   * Claims the key for this request, or answers for it: a replay when the key finished with the
   * same body, AppError 422 with another body, 409 while it is running.
   */
  async start (scope: IdempotencyScope, body: unknown, log: FastifyBaseLogger): Promise<IdempotencyStart> {
    const now = Date.now()
    await this.#purge(now, log)
    const id: IdempotencyKeyId = {
      workspaceId: scope.workspaceId,
      connectionId: scope.connectionId,
      action: scope.action,
      keyHash: sha256([KEY_DOMAIN, scope.key])
    }
    const fingerprint = bodyFingerprint(scope, body)
    const owner = randomUUID()
    const claim = await this.#store.claimIdempotencyKey(id, fingerprint, owner, now, now + this.#options.leaseMs)
    if (claim.claimed) return { replay: undefined, ticket: { id, owner } }
    if (claim.fingerprint !== fingerprint) {
      throw new AppError('idempotency_key_reused', 'this Idempotency-Key came with a different body; use a new key for a new request')
    }
    if (claim.state === 'running') {
      throw new AppError('idempotency_key_in_use', 'a request with this Idempotency-Key is still being processed; retry once it has ended', {}, 1)
    }
    const answer: unknown = JSON.parse(claim.answer)
    if (!Value.Check(RememberedAnswerSchema, answer)) throw new Error('a remembered idempotency answer does not match its schema')
    return { replay: answer }
  }

  /** Remembers the 2xx answer for 24 hours. A store failure here is logged, not answered: Segment already took the events. */
  async complete (ticket: IdempotencyTicket, answer: RememberedAnswer, log: FastifyBaseLogger): Promise<void> {
    try {
      const mine = await this.#store.completeIdempotencyKey(ticket.id, ticket.owner, JSON.stringify(answer), Date.now() + IDEMPOTENCY_TTL_MS)
      if (!mine) log.warn('the Idempotency-Key lease ran out before the request ended; its answer is not remembered')
    } catch (error) {
      log.warn({ err: error }, 'could not remember the Idempotency-Key answer; a retry is sent again with the same messageIds')
    }
  }

  /** Forgets the key after an error, so the same key (and messageIds) can be retried. */
  async release (ticket: IdempotencyTicket, log: FastifyBaseLogger): Promise<void> {
    try {
      await this.#store.releaseIdempotencyKey(ticket.id, ticket.owner)
    } catch (error) {
      log.warn({ err: error }, 'could not release the Idempotency-Key; it is free again once its lease runs out')
    }
  }

  async #purge (now: number, log: FastifyBaseLogger): Promise<void> {
    if (now - this.#lastPurge < PURGE_EVERY_MS) return
    this.#lastPurge = now
    try {
      const limit = this.#options.purgeLimit ?? PURGE_LIMIT
      const purged = await this.#store.purgeIdempotencyKeys(now, limit)
      if (purged >= limit) this.#lastPurge = Number.NEGATIVE_INFINITY
    } catch (error) {
      log.warn({ err: error }, 'could not purge expired Idempotency-Keys')
    }
  }
}

/** SHA-256 (hex) over length-prefixed fields, so no two field lists hash alike ("ab"+"c" vs "a"+"bc"). */
function sha256 (fields: string[]): string {
  const hash = createHash('sha256')
  for (const field of fields) {
    const bytes = Buffer.from(field, 'utf8')
    const length = Buffer.alloc(4)
    length.writeUInt32BE(bytes.length)
    hash.update(length).update(bytes)
  }
  return hash.digest('hex')
}

/**
 * The body's fingerprint: the same JSON gives the same fingerprint whatever its whitespace or key
 * order. `sentAt` (top level, and on batch items) is left out: the service replaces it, and a
 * client library stamps a new one on each attempt of the same request. JSON.stringify with a
 * replacer that sorts keys recurses natively, as deep as buildUpstream's own serialisation did.
 */
export function bodyFingerprint (scope: IdempotencyScope, body: unknown): string {
  const batch = scope.action === 'batch-send' ? (body as { batch?: unknown }).batch : undefined
  let canonical: string
  try {
    canonical = JSON.stringify(body, function (this: unknown, _key: string, value: unknown) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
      const dropSentAt = value === body || this === batch
      const sorted: Record<string, unknown> = {}
      for (const key of Object.keys(value).sort()) {
        if (!(dropSentAt && key === 'sentAt')) sorted[key] = (value as Record<string, unknown>)[key]
      }
      return sorted
    })
  } catch (error) {
    if (error instanceof RangeError) {
      throw new AppError('invalid_request', 'the body nests too deeply to be forwarded', { errors: [{ path: '', message: 'nests too deeply' }] })
    }
    throw error
  }
  return sha256([FINGERPRINT_DOMAIN, scope.workspaceId, scope.connectionId, scope.action, scope.key, canonical])
}
