import { createHash, randomUUID } from 'node:crypto'

// Segment deduplicates on messageId across all of its customers, so every id we make must be
// globally unique. Ids are `sfw-` + a UUID: random (v4) without an Idempotency-Key, derived (v8)
// with one. 40 characters, well under Segment's 100.
const prefix = 'sfw-'
// Versioned domain tag: changing the derivation must never reproduce ids of an older scheme.
const domain = 'segment-forwarder/message-id/v1'

export interface MessageIdSeed {
  workspaceId: string
  connectionId: string
  action: string
  idempotencyKey: string
}

export function randomMessageId (): string {
  return prefix + randomUUID()
}

/**
 * The messageId for item `index` of a request with an Idempotency-Key: the same inputs always give
 * the same id; any difference (including the workspace, so two tenants using the same key never
 * collide) gives an unrelated one.
 */
export function derivedMessageId (seed: MessageIdSeed, index: number): string {
  return derivedMessageIds(seed, index + 1)(index)
}

/**
 * derivedMessageId for items 0..count-1, with one hash for them all: SHAKE256 (an extendable-output
 * SHA-3) over length-prefixed fields, so no two field lists encode alike ("ab"+"c" vs "a"+"bc"),
 * read as a stream in which item i owns bytes 16i..16i+15. An XOF's output does not depend on the
 * length asked for, so an item's id does not depend on the batch size. Hashing per item cost more
 * than building the whole batch.
 */
export function derivedMessageIds (seed: MessageIdSeed, count: number): (index: number) => string {
  let stream: Buffer | undefined
  return (index) => {
    if (!Number.isInteger(index) || index < 0 || index >= count) throw new RangeError(`index ${index} is outside 0..${count - 1}`)
    stream ??= idStream(seed, count)
    return prefix + uuidV8(stream.subarray(16 * index, 16 * index + 16))
  }
}

function idStream (seed: MessageIdSeed, count: number): Buffer {
  const hash = createHash('shake256', { outputLength: 16 * count })
  for (const field of [domain, seed.workspaceId, seed.connectionId, seed.action, seed.idempotencyKey]) {
    const bytes = Buffer.from(field, 'utf8')
    const length = Buffer.alloc(4)
    length.writeUInt32BE(bytes.length)
    hash.update(length).update(bytes)
  }
  return hash.digest()
}

// RFC 9562 UUIDv8: 122 bits of the digest with the version and variant bits set.
function uuidV8 (bytes: Buffer): string {
  const b = Buffer.from(bytes)
  b[6] = (b[6]! & 0x0f) | 0x80
  b[8] = (b[8]! & 0x3f) | 0x80
  const hex = b.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
