import t from 'tap'
import { backoffBaseMs, backoffCapMs, backoffDelay, isRetryableStatus, maxRetryAfterMs, parseRetryAfter } from '../src/segment/retry.js'

t.test('retryable statuses', async (t) => {
  for (const status of [408, 429, 500, 502, 503, 504, 507, 599]) t.ok(isRetryableStatus(status), `${status} is retried`)
  for (const status of [200, 204, 301, 302, 307, 400, 401, 403, 404, 409, 410, 413, 422, 501, 505, 511]) t.notOk(isRetryableStatus(status), `${status} is final`)
})

t.test('Retry-After in seconds', async (t) => {
  const now = Date.parse('2025-06-01T12:00:00Z')
  t.equal(parseRetryAfter('0', now), 0)
  t.equal(parseRetryAfter('3', now), 3000)
  t.equal(parseRetryAfter(' 7 ', now), 7000)
  t.equal(parseRetryAfter(['2', '9'], now), 2000, 'the first of repeated headers')
  t.equal(parseRetryAfter('86400', now), maxRetryAfterMs, 'capped')
})

t.test('Retry-After as an HTTP-date', async (t) => {
  const now = Date.parse('2025-06-01T12:00:00Z')
  t.equal(parseRetryAfter('Sun, 01 Jun 2025 12:00:30 GMT', now), 30000)
  t.equal(parseRetryAfter('Sunday, 01-Jun-25 12:00:30 GMT', now), 30000, 'RFC 850 form')
  t.equal(parseRetryAfter('Sun, 01 Jun 2025 11:00:00 GMT', now), 0, 'a past date means now')
  t.equal(parseRetryAfter('Mon, 02 Jun 2025 12:00:00 GMT', now), maxRetryAfterMs, 'capped')
})

t.test('garbage Retry-After is ignored', async (t) => {
  const now = Date.now()
  for (const value of [undefined, '', 'soon', '-1', '1.5', '1e3', '0x10', 'Sun, 99 Foo 2025 99:99:99 GMT', '2025-06-01T12:00:00Z']) {
    t.equal(parseRetryAfter(value, now), undefined, JSON.stringify(value))
  }
})

t.test('backoff grows exponentially with full jitter, capped', async (t) => {
  t.equal(backoffDelay(1, () => 0), 0, 'full jitter reaches zero')
  t.equal(backoffDelay(1, () => 0.999999), backoffBaseMs - 1)
  t.equal(backoffDelay(2, () => 0.5), backoffBaseMs)
  t.equal(backoffDelay(3, () => 0.5), backoffBaseMs * 2)
  t.equal(backoffDelay(50, () => 0.999999), backoffCapMs - 1, 'capped')
  for (let retry = 1; retry <= 10; retry++) {
    const delay = backoffDelay(retry)
    t.ok(delay >= 0 && delay < Math.min(backoffCapMs, backoffBaseMs * 2 ** (retry - 1)), `retry ${retry}: ${delay} ms`)
  }
})
