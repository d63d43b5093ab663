import { hash, timingSafeEqual } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { randomBase62, toBase62 } from './ids.js'

// Workspace tokens: `sfw_` + 32 random base62 characters (~190 bits) + a 6-character CRC32
// checksum, so secret scanners can match the prefix and verify a candidate offline, and a
// mistyped token is refused without touching the store.
export const TOKEN_PREFIX = 'sfw_'
const RANDOM_LENGTH = 32
const CHECKSUM_LENGTH = 6
const TOKEN_PATTERN = /^sfw_[0-9A-Za-z]{38}$/

function checksum (random: string): string {
  return toBase62(crc32(random), CHECKSUM_LENGTH)
}

export function generateToken (): string {
  const random = randomBase62(RANDOM_LENGTH)
  return `${TOKEN_PREFIX}${random}${checksum(random)}`
}

export function isWellFormedToken (token: string): boolean {
  if (!TOKEN_PATTERN.test(token)) return false
  const random = token.slice(TOKEN_PREFIX.length, TOKEN_PREFIX.length + RANDOM_LENGTH)
  return token.slice(TOKEN_PREFIX.length + RANDOM_LENGTH) === checksum(random)
}

/** SHA-256 hex: what the store keeps instead of the token. (The one-shot crypto.hash: half the CPU of a Hash object.) */
export function hashToken (token: string): string {
  return hash('sha256', token, 'hex')
}

/** Constant-time equality of two SHA-256 hex digests. */
export function hashesEqual (a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'))
}

/** Constant-time equality of two secrets of any length (compares their SHA-256 digests). */
export function secretsEqual (a: string, b: string): boolean {
  return timingSafeEqual(hash('sha256', a, 'buffer'), hash('sha256', b, 'buffer'))
}

/** The bearer credential of an `Authorization` header, or undefined. */
export function bearerToken (header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim())
  return match?.[1]
}
