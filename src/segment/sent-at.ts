// `sentAt` closes every body we send: each body is built without its closing brace, and each
// attempt completes it with `,"sentAt":"…"}` (the time of sending), so sizes stay exact.

const sentAtLength = 24 // toISOString() for years 0000-9999: `2025-03-14T09:26:53.589Z`

/** UTF-8 bytes of `,"sentAt":"…"}`, the same for every attempt. */
export const sentAtTailBytes = ',"sentAt":"'.length + sentAtLength + '"}'.length

/** `,"sentAt":"…"}` for `sentAt`; ASCII only. */
export function sentAtTail (sentAt: Date): string {
  const iso = sentAt.toISOString()
  // A fixed length keeps `bytes` exact for every attempt; only years past 9999 break it.
  if (iso.length !== sentAtLength) throw new RangeError(`sentAt ${iso} is not a 24-character ISO date`)
  return ',"sentAt":"' + iso + '"}'
}

/**
 * `head` (a body without its closing brace) completed with `,"sentAt":"…"}`, in a new buffer each
 * time: an earlier attempt's write may still hold the previous one.
 */
export function withSentAt (head: Buffer, sentAt: Date): Buffer {
  const body = Buffer.allocUnsafe(head.length + sentAtTailBytes)
  head.copy(body, 0)
  body.write(sentAtTail(sentAt), head.length, 'latin1')
  return body
}
