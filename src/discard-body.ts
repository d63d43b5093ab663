import type { IncomingMessage } from 'node:http'

/** How much of a refused body is read and thrown away before answering regardless… */
const DISCARD_MAX_BYTES = 10 * 1024 * 1024
/** …and for how long, whichever comes first (design/api.md, Answers). */
const DISCARD_MAX_MS = 10_000

/**
 * For an error answered while the request body is still arriving (413, 401, 415, …): reads and
 * discards the rest of the body, up to DISCARD_MAX_BYTES or DISCARD_MAX_MS, and resolves once it
 * ended (`'ended'`, or the client went away) or the bound was reached (`'bound'`: answer with
 * `Connection: close`). Answering first and closing while the body still arrives makes the kernel
 * answer the unread bytes with a reset, so a client that writes its whole body before reading
 * (Node's fetch and http) sees EPIPE or ECONNRESET instead of the answer; and Node closes at once
 * after an answer when the client or Fastify (on parser errors) said `Connection: close`.
 * Node has no bounded discard of its own, hence this listener.
 */
export async function discardRestOfBody (request: IncomingMessage): Promise<'ended' | 'bound'> {
  // readableEnded too: a body read to its end by the parser (then refused) has nothing left, and
  // inject()'s requests never set `complete`.
  if (request.complete || request.readableEnded || request.destroyed) return 'ended'
  return await new Promise((resolve) => {
    let discarded = 0
    const finish = (outcome: 'ended' | 'bound'): void => {
      clearTimeout(timer)
      request.off('data', onData)
      request.off('end', ended)
      request.off('close', ended)
      resolve(outcome)
    }
    const ended = (): void => { finish('ended') }
    const onData = (chunk: Buffer): void => {
      discarded += chunk.length
      if (discarded > DISCARD_MAX_BYTES) finish('bound')
    }
    const timer = setTimeout(() => { finish('bound') }, DISCARD_MAX_MS)
    request.on('data', onData)
    request.once('end', ended)
    request.once('close', ended)
    request.resume()
  })
}
