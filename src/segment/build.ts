import { AppError } from '../errors.js'
import { serviceName, serviceVersion } from '../version.js'
import { actions, type ActionName } from './actions.js'
import type { BatchPart } from './batcher.js'
import { derivedMessageIds, randomMessageId } from './message-id.js'
import { sentAtTailBytes, withSentAt } from './sent-at.js'

export interface BuildOptions {
  workspaceId: string
  connectionId: string
  /** When set, generated messageIds are derived from it (see message-id.ts) instead of random. */
  idempotencyKey?: string | undefined
  maxEventBytes: number
  maxBatchBytes: number
  /** OAuth sources: the Write Key goes in the body as `writeKey` (before `sentAt`), and counts towards the limits. */
  bodyWriteKey?: string | undefined
}

export interface UpstreamRequest {
  /** Segment path, e.g. `/v1/track`. */
  path: string
  /** The messageId of each event, in order: the caller's when given, else generated. */
  messageIds: string[]
  events: number
  /** UTF-8 bytes of every body that `render` returns. */
  bytes: number
  /** The body to send, as UTF-8; only `sentAt` differs between calls. */
  render: (sentAt: Date) => Buffer
  /**
   * The same events as items of someone else's `/v1/batch` (batcher.ts), each with its `type` and,
   * for a batch, the batch's top-level `context` and `integrations` merged in (the item's own keys
   * win); made on first use, then kept. Undefined when the body cannot be joined: a batch with
   * other top-level fields of its own.
   */
  part: () => BatchPart | undefined
}

type Json = Record<string, unknown>

const library = { name: serviceName, version: serviceVersion }
const batchOpen = '{"batch":['

/**
 * Builds the exact body Segment will get for a validated action body, checks Segment's size limits
 * on it, and throws AppError('payload_too_large') past one. The caller's objects are not modified.
 */
export function buildUpstream (action: ActionName, body: object, options: BuildOptions): UpstreamRequest {
  const { path } = actions[action]
  const count = action === 'batch-send' ? (body as { batch: unknown[] }).batch.length : 1
  const nextId = options.idempotencyKey === undefined
    ? randomMessageId
    : derivedMessageIds({ workspaceId: options.workspaceId, connectionId: options.connectionId, action, idempotencyKey: options.idempotencyKey }, count)
  try {
    return action === 'batch-send'
      ? buildBatch(path, body as Json, nextId, options)
      : buildSingle(path, actions[action].type, body as Json, nextId, options)
  } catch (error) {
    // JSON.parse accepts nesting that JSON.stringify cannot serialise ("Maximum call stack size
    // exceeded"); parsed JSON has no cycles or BigInts, so a RangeError here means the caller's
    // nesting, a bad request rather than a 500.
    if (error instanceof RangeError) {
      throw new AppError('invalid_request', 'the body nests too deeply to be forwarded', {
        errors: [{ path: '', message: 'nests too deeply' }]
      })
    }
    throw error
  }
}

function buildSingle (path: string, type: string, body: Json, nextId: (index: number) => string, options: BuildOptions): UpstreamRequest {
  // Ours replaces any caller's sentAt: it must be the time of sending. (A rest copy only when there
  // is one to drop: prepare() copies the body anyway when it adds a messageId or the library.)
  let fields = body
  if (body.sentAt !== undefined) {
    const { sentAt: _sentAt, ...rest } = body
    fields = rest
  }
  const event = prepare(fields, false, nextId, 0)
  // Encoded once: the buffer's length is the exact size, and each attempt copies it.
  const encoded = Buffer.from(JSON.stringify(event))
  // Without its closing brace, which comes with sentAt.
  const eventHead = encoded.subarray(0, -1)
  const head = withBodyWriteKey(eventHead, options.bodyWriteKey)
  const bytes = head.length + sentAtTailBytes
  if (bytes > options.maxEventBytes) {
    throw new AppError('payload_too_large', `The event is ${bytes} bytes; Segment accepts at most ${options.maxEventBytes}.`, {
      limit: options.maxEventBytes, size: bytes, largestFields: largestFields(event)
    })
  }
  // As a batch item: the same object with its `type` first (a given `type` already equals it), and
  // without an OAuth source's writeKey, which belongs to the whole body.
  const part = once((): BatchPart => ({
    items: event.type === undefined
      ? Buffer.concat([Buffer.from(`{"type":${JSON.stringify(type)},`), eventHead.subarray(1), closeBrace])
      : Buffer.concat([eventHead, closeBrace]),
    events: 1
  }))
  return { path, messageIds: [event.messageId as string], events: 1, bytes, render: (sentAt) => withSentAt(head, sentAt), part }
}

const closeBrace = Buffer.from('}')

function once<T> (make: () => T): () => T {
  let made: { value: T } | undefined
  return () => {
    made ??= { value: make() }
    return made.value
  }
}

function buildBatch (path: string, body: Json, nextId: (index: number) => string, options: BuildOptions): UpstreamRequest {
  const { batch, sentAt: _sentAt, ...rest } = body
  const items = batch as Json[]
  const context = rest.context as Json | undefined
  const integrations = rest.integrations as Json | undefined
  const contextSetsLibrary = context?.library != null
  // Segment merges the batch's context and integrations into each item. Adding both whole is an
  // upper bound of what merging adds, so items under it need no second serialisation.
  const mergeBound = (context === undefined ? 0 : ',"context":'.length + Buffer.byteLength(JSON.stringify(context))) +
    (integrations === undefined ? 0 : ',"integrations":'.length + Buffer.byteLength(JSON.stringify(integrations)))

  const messageIds = new Array<string>(items.length)
  const sizes = new Array<number>(items.length)
  // Each item is encoded into one buffer as soon as it is serialised: writing tells its exact size,
  // and no item string outlives its turn. Holding the items as strings until the end (joined or as a
  // rope) kept 1,000 small strings alive through young-generation collections, and undici encoded
  // the whole body once more (measured on a 450 KB batch, Node 20: GC and encoding were a third of
  // the request's CPU).
  const out = new ByteWriter(Math.min(options.maxBatchBytes, 1024 + items.length * 512))
  out.write(batchOpen)
  for (let index = 0; index < items.length; index++) {
    const event = prepare(items[index]!, contextSetsLibrary, nextId, index)
    if (index > 0) out.write(',')
    const size = out.write(JSON.stringify(event))
    if (size + mergeBound > options.maxEventBytes) {
      const merged = mergeLikeSegment(event, context, integrations)
      const seen = mergeBound === 0 ? size : Buffer.byteLength(JSON.stringify(merged))
      if (seen > options.maxEventBytes) {
        throw new AppError('payload_too_large',
          `Batch item ${index} is ${seen} bytes (with the batch's context and integrations merged in); Segment accepts at most ${options.maxEventBytes} per event.`,
          { limit: options.maxEventBytes, size: seen, index, largestFields: largestFields(merged) })
      }
    }
    messageIds[index] = event.messageId as string
    sizes[index] = size
  }
  const itemsEnd = out.length
  out.write(']')
  const restJson = JSON.stringify(rest)
  if (restJson !== '{}') out.write(',' + restJson.slice(1, -1))
  if (options.bodyWriteKey !== undefined) out.write(writeKeyField(options.bodyWriteKey))

  // The closing brace comes with sentAt.
  const bytes = out.length + sentAtTailBytes
  if (bytes > options.maxBatchBytes) {
    // The body's top level is essentially `/batch`; its biggest items are what the caller can move.
    const biggest = sizes.map((size, index) => ({ path: `/batch/${index}`, bytes: size }))
      .sort((a, b) => b.bytes - a.bytes).slice(0, 5)
    throw new AppError('payload_too_large',
      `The batch body is ${bytes} bytes; Segment accepts at most ${options.maxBatchBytes}. Split it into smaller batches.`,
      { limit: options.maxBatchBytes, size: bytes, largestFields: biggest })
  }
  const head = out.bytes()
  const others = Object.keys(rest).filter((key) => key !== 'context' && key !== 'integrations')
  const part = once((): BatchPart | undefined => {
    // Top-level fields other than these have no per-item meaning: such a batch goes alone.
    if (others.length > 0) return undefined
    if (context === undefined && integrations === undefined) {
      return { items: head.subarray(batchOpen.length, itemsEnd), events: items.length }
    }
    // The batch's context and integrations move into its own items, so they reach no one else's.
    const merged = new ByteWriter(Math.min(options.maxBatchBytes * 2, itemsEnd + items.length * mergeBound))
    for (let index = 0; index < items.length; index++) {
      const event = prepare(items[index]!, contextSetsLibrary, (i) => messageIds[i]!, index)
      if (index > 0) merged.write(',')
      merged.write(JSON.stringify(mergeLikeSegment(event, context, integrations)))
    }
    return { items: merged.bytes(), events: items.length }
  })
  return { path, messageIds, events: items.length, bytes, render: (sentAt) => withSentAt(head, sentAt), part }
}

/** OAuth sources: `,"writeKey":"…"` after the event's own fields, as Segment's Node library sends it. */
export function writeKeyField (writeKey: string): string {
  return ',"writeKey":' + JSON.stringify(writeKey)
}

function withBodyWriteKey (head: Buffer, writeKey: string | undefined): Buffer {
  return writeKey === undefined ? head : Buffer.concat([head, Buffer.from(writeKeyField(writeKey))])
}

/** UTF-8 appended in place to one buffer that doubles when full. */
class ByteWriter {
  #buffer: Buffer
  length = 0

  constructor (capacity: number) {
    this.#buffer = Buffer.allocUnsafe(capacity)
  }

  /** Appends `text` as UTF-8 and returns its size in bytes. */
  write (text: string): number {
    // A UTF-16 code unit takes at most 3 UTF-8 bytes; measure exactly only when that may not fit.
    if (this.length + text.length * 3 > this.#buffer.length) {
      const needed = this.length + Buffer.byteLength(text)
      if (needed > this.#buffer.length) {
        const grown = Buffer.allocUnsafe(Math.max(needed, this.#buffer.length * 2))
        this.#buffer.copy(grown, 0, 0, this.length)
        this.#buffer = grown
      }
    }
    const written = this.#buffer.write(text, this.length, 'utf8')
    this.length += written
    return written
  }

  /** What was written (a view, not a copy). */
  bytes (): Buffer {
    return this.#buffer.subarray(0, this.length)
  }
}

/**
 * The event with a messageId and, unless some context names one, our library: a shallow copy, or
 * the caller's own object when it needs neither (it is only serialised, never modified).
 */
function prepare (item: Json, contextSetsLibrary: boolean, nextId: (index: number) => string, index: number): Json {
  const context = item.context as Json | undefined
  const addLibrary = !contextSetsLibrary && context?.library == null
  if (item.messageId !== undefined && !addLibrary && item.sentAt === undefined) return item
  // Object.assign, not spread: V8 serialises the copies several times faster (measured, Node 20).
  const event: Json = Object.assign({}, item)
  if (event.messageId === undefined) event.messageId = nextId(index)
  // An item's own sentAt goes, as on a single call: the batch's top-level one is the time of sending.
  if (event.sentAt !== undefined) delete event.sentAt
  if (addLibrary) {
    const withLibrary: Json = Object.assign({}, context)
    withLibrary.library = library
    event.context = withLibrary
  }
  return event
}

/** The event as Segment sees it in a batch: top-level context and integrations merged, the item winning. */
function mergeLikeSegment (event: Json, context: Json | undefined, integrations: Json | undefined): Json {
  const merged: Json = { ...event }
  if (context !== undefined) merged.context = { ...context, ...(event.context as Json | undefined) }
  if (integrations !== undefined) merged.integrations = { ...integrations, ...(event.integrations as Json | undefined) }
  return merged
}

function largestFields (event: Json): Array<{ path: string, bytes: number }> {
  const fields: Array<{ path: string, bytes: number }> = []
  for (const [key, value] of Object.entries(event)) {
    const json = JSON.stringify(value) as string | undefined
    if (json !== undefined) fields.push({ path: '/' + key.replaceAll('~', '~0').replaceAll('/', '~1'), bytes: Buffer.byteLength(json) })
  }
  return fields.sort((a, b) => b.bytes - a.bytes).slice(0, 5)
}
