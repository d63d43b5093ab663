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
 * collide) gives an unrelated one. SHA-256 over length-prefixed fields, so no two field lists
 * encode alike ("ab"+"c" vs "a"+"bc").
 */
export function derivedMessageId (seed: MessageIdSeed, index: number): string {
  return derivedMessageIds(seed)(index)
}

/** derivedMessageId with the fixed fields hashed once, for the items of one batch. */
export function derivedMessageIds (seed: MessageIdSeed): (index: number) => string {
  const base = createHash('sha256')
  for (const field of [domain, seed.workspaceId, seed.connectionId, seed.action, seed.idempotencyKey]) update(base, field)
  return (index) => {
    const hash = base.copy()
    update(hash, String(index))
    return prefix + uuidV8(hash.digest())
  }
}

function update (hash: ReturnType<typeof createHash>, field: string): void {
  const bytes = Buffer.from(field, 'utf8')
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  hash.update(length).update(bytes)
}

// RFC 9562 UUIDv8: 122 bits of the digest with the version and variant bits set.
function uuidV8 (digest: Buffer): string {
  const b = Buffer.from(digest.subarray(0, 16))
  b[6] = (b[6]! & 0x0f) | 0x80
  b[8] = (b[8]! & 0x3f) | 0x80
  const hex = b.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
