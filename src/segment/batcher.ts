// Batch assembly: built events joined into `/v1/batch` bodies within Segment's limits, measured
// exactly (the bytes of the body actually sent). Free of Fastify and of any sending, so sync
// coalescing (coalesce.ts) and queued delivery share it.
import { sentAtTail, sentAtTailBytes } from './sent-at.js'

/** Segment's limit on the events of one batch (api.md § Limits). */
export const MAX_BATCH_EVENTS = 2500

/**
 * Some events ready to join a batch: their JSON objects, each with its `type` and everything
 * Segment should see (no top-level fields of their own), separated by commas, as UTF-8.
 */
export interface BatchPart {
  items: Buffer
  events: number
}

export interface BatchLimits {
  /** Bytes of the whole body, `sentAt` included. */
  maxBatchBytes: number
  /** Events in one body; MAX_BATCH_EVENTS when left out. */
  maxBatchEvents?: number
  /**
   * Fields every body carries at its top level after `batch` (an OAuth source's `writeKey`, say),
   * counted in its bytes. Only fields that are the same for every part: parts carry nothing else.
   */
  topLevel?: Record<string, unknown>
}

const open = Buffer.from('{"batch":[')
const close = Buffer.from(']')

/** The exact UTF-8 size of the body that joins parts holding `itemBytes` bytes of items in all. */
export function batchBodyBytes (itemBytes: number, parts: number, topLevelBytes = 0): number {
  return open.length + itemBytes + Math.max(0, parts - 1) + close.length + topLevelBytes + sentAtTailBytes
}

/** `topLevel` as the bytes that follow the batch's `]`: `,"key":value…`, or nothing. */
function topLevelBytes (topLevel: Record<string, unknown> | undefined): Buffer {
  const json = topLevel === undefined ? '{}' : JSON.stringify(topLevel)
  return json === '{}' ? Buffer.alloc(0) : Buffer.from(',' + json.slice(1, -1))
}

/** Parts gathered into one body while they fit; never splits a part. */
export class BatchAssembler {
  readonly parts: BatchPart[] = []
  #itemBytes = 0
  #events = 0
  readonly #maxBytes: number
  readonly #maxEvents: number
  readonly #topLevel: Buffer

  constructor (limits: BatchLimits) {
    this.#maxBytes = limits.maxBatchBytes
    this.#maxEvents = limits.maxBatchEvents ?? MAX_BATCH_EVENTS
    this.#topLevel = topLevelBytes(limits.topLevel)
  }

  get events (): number { return this.#events }

  /** UTF-8 bytes of the body as it stands. */
  get bytes (): number { return batchBodyBytes(this.#itemBytes, this.parts.length, this.#topLevel.length) }

  /** Whether `part` can join without passing a limit. */
  fits (part: BatchPart): boolean {
    return this.#events + part.events <= this.#maxEvents &&
      batchBodyBytes(this.#itemBytes + part.items.length, this.parts.length + 1, this.#topLevel.length) <= this.#maxBytes
  }

  add (part: BatchPart): void {
    this.parts.push(part)
    this.#itemBytes += part.items.length
    this.#events += part.events
  }

  /** The body with `sentAt`, in a new buffer each time (an earlier attempt's write may hold the last one). */
  render (sentAt: Date): Buffer {
    const body = Buffer.allocUnsafe(this.bytes)
    let at = open.copy(body, 0)
    for (let index = 0; index < this.parts.length; index++) {
      if (index > 0) body[at++] = 0x2c // ,
      at += this.parts[index]!.items.copy(body, at)
    }
    at += close.copy(body, at)
    at += this.#topLevel.copy(body, at)
    body.write(sentAtTail(sentAt), at, 'latin1')
    return body
  }
}

/**
 * Splits `entries` into batches, in order, each within `limits`. An entry without a part (one that
 * cannot join others) or one that fits no batch with another gets a batch of its own; the caller
 * sends such a batch as the entry's own request.
 */
export function planBatches<T> (entries: readonly T[], partOf: (entry: T) => BatchPart | undefined, limits: BatchLimits): T[][] {
  const maxEvents = limits.maxBatchEvents ?? MAX_BATCH_EVENTS
  const extraBytes = topLevelBytes(limits.topLevel).length
  const batches: T[][] = []
  let current: T[] = []
  let assembler = new BatchAssembler(limits)
  const cut = (): void => {
    if (current.length > 0) batches.push(current)
    current = []
    assembler = new BatchAssembler(limits)
  }
  for (const entry of entries) {
    const part = partOf(entry)
    if (part === undefined) {
      batches.push([entry])
      continue
    }
    if (part.events > maxEvents || batchBodyBytes(part.items.length, 1, extraBytes) > limits.maxBatchBytes) {
      // Too big for a joined body even alone: it goes as its own request, the batch goes on.
      batches.push([entry])
      continue
    }
    if (!assembler.fits(part)) cut()
    assembler.add(part)
    current.push(entry)
  }
  cut()
  return batches
}
