import type { CancelSignal } from './client.js'

/**
 * How an upstream request authenticates. The client asks for the Authorization header before each
 * attempt and reports a refusal; everything else about a send stays the same for every kind.
 * Write Key connections use basicCredentials(); OAuth sources use oauth.ts's.
 */
export interface UpstreamCredentials {
  readonly scheme: 'basic' | 'bearer'
  /**
   * The Authorization header of the next attempt. A bearer token may have to be fetched first;
   * that happens before `deadline` (a performance.now() time) or fails with a coded AppError.
   */
  authorization: (deadline: number, signal?: CancelSignal) => string | Promise<string>
  /** The Tracking API refused `authorization` (401, 403, 511): the next attempt must not reuse it. */
  refused: (authorization: string) => void
  /** What an error excerpt must never echo back. */
  secrets: () => string[]
}

/** `Authorization: Basic base64(writeKey + ":")`, as Segment's HTTP API documents. */
export function basicCredentials (writeKey: string): UpstreamCredentials {
  const encoded = Buffer.from(writeKey + ':').toString('base64')
  const authorization = 'Basic ' + encoded
  return {
    scheme: 'basic',
    authorization: () => authorization,
    refused: () => {},
    secrets: () => [writeKey, encoded].filter((s) => s.length > 0)
  }
}
