// The retry policy, as pure functions (no clock or randomness of their own) so tests can pin them.

/** Longest Retry-After we honour; Segment's own SDKs cap it at 300 s too. */
export const maxRetryAfterMs = 300_000
// Backoff: full jitter over base × 2^(retry-1), capped. A synchronous caller waits on us under a
// 15 s deadline and each attempt may take up to 5 s, so waits stay small beside the attempts:
// retries 1..3 wait at most 0.2, 0.4 and 0.8 s (1.4 s in all); the cap only matters for large
// SEGMENT_MAX_ATTEMPTS. A Retry-After from Segment overrides this when it asks for longer.
export const backoffBaseMs = 200
export const backoffCapMs = 5_000

/**
 * Whether a Segment answer may succeed if sent again: 408, 429 and 5xx other than 501 (not
 * implemented), 505 (HTTP version) and 511 (network authentication: the client retries it for
 * OAuth sources only, with a new token). Everything else (2xx, 3xx, other 4xx) is final.
 */
export function isRetryableStatus (status: number): boolean {
  if (status === 408 || status === 429) return true
  return status >= 500 && status <= 599 && status !== 501 && status !== 505 && status !== 511
}

/**
 * A Retry-After header (delay-seconds or an HTTP-date) as milliseconds from `now`, capped at
 * maxRetryAfterMs; `undefined` when absent or unparseable. A date in the past gives 0.
 */
export function parseRetryAfter (value: string | string[] | undefined, now: number): number | undefined {
  const header = Array.isArray(value) ? value[0] : value
  if (header === undefined) return undefined
  const text = header.trim()
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, maxRetryAfterMs)
  // An HTTP-date names a weekday and a month; requiring letters keeps Date.parse from reading
  // garbage such as "-1" or "1.5" as a date.
  if (!/^[A-Za-z]{3,9},? /.test(text)) return undefined
  const at = Date.parse(text)
  if (Number.isNaN(at)) return undefined
  return Math.min(Math.max(0, at - now), maxRetryAfterMs)
}

/** The wait before retry number `retry` (1 for the first retry), with `random()` in [0, 1). */
export function backoffDelay (retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(backoffCapMs, backoffBaseMs * 2 ** Math.max(0, retry - 1))
  return Math.floor(random() * ceiling)
}
