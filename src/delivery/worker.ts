import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config.js'
import type { ResolvedConnection } from '../connections.js'
import { AppError } from '../errors.js'
import { Cancel, type SegmentClient } from '../segment/client.js'
import type { UpstreamCredentials } from '../segment/credentials.js'
import { writeKeyField } from '../segment/build.js'
import type { KeyRing } from '../store/crypto.js'
import { deliveryAad, openItems } from './payload.js'
import type { ClaimedDelivery, Finish, QueueStore } from './queue-store.js'

/** How often an idle worker looks for due deliveries that another replica accepted (README: Queued delivery). */
export const POLL_MS = 250
/** Deliveries one claim may take; they are joined into as few /v1/batch requests as the limits allow. */
export const CLAIM_LIMIT = 1000
/** Most events in one /v1/batch request (Segment's limit). */
export const MAX_BATCH_EVENTS = 2500
const BACKOFF_BASE_MS = 1000
const PURGE_EVERY_MS = 60_000
// `{"batch":[` … `],"sentAt":"2025-03-14T09:26:53.589Z"}`
const BATCH_OVERHEAD_BYTES = '{"batch":['.length + '],"sentAt":"'.length + 24 + '"}'.length

export interface AttemptLog {
  connectionId: string
  workspaceId: string
  deliveries: number
  events: number
  bytes: number
  upstreamStatus: number | 'error' | 'timeout' | undefined
  attempt: number
  durationMs: number
}

export interface WorkerOptions {
  queue: QueueStore
  ring: KeyRing
  /** The connection as it is now (current Write Key and endpoint); undefined when it is gone. */
  resolve: (workspaceId: string, connectionId: string) => Promise<ResolvedConnection | undefined>
  /** A client that makes one attempt per send, within the lease. */
  client: SegmentClient
  /** OAuth sources: the bearer credentials of a connection (segment/oauth.ts); Basic with its Write Key otherwise. */
  oauthCredentials?: (connection: ResolvedConnection) => UpstreamCredentials | undefined
  config: Pick<Config, 'segment' | 'delivery'>
  log: FastifyBaseLogger
  concurrency: number
  onOutcome?: (outcome: Finish['kind'], deliveries: number) => void
  onAttempt?: (report: AttemptLog) => void
  random?: () => number
  pollMs?: number
}

interface Outgoing {
  lines: string[]
  bytes: number
  /** Indexes into the claim. */
  members: Set<number>
}

type Sent =
  | { ok: true, status: number }
  | { ok: false, retryable: boolean, status: number | null, retryAfterMs: number | undefined, error: string }
  | { ok: false, released: true }

/**
 * The delivery workers of one process: `concurrency` loops, each claiming the due deliveries of
 * one connection at a time, joining their events into /v1/batch requests and recording the
 * outcome. One attempt per claim; a retry is a later claim, by this process or another replica.
 */
export class DeliveryWorker {
  readonly #o: WorkerOptions
  readonly #attemptTimeoutMs: number
  readonly #cancel = new Cancel()
  #stopping = false
  #loops: Array<Promise<void>> = []
  #sleepers = new Set<() => void>()
  #lastPurge = 0
  #lastError = 0
  /** Connections paced after a 429, until when: their new deliveries wait too (per Write Key, this process). */
  readonly #paced = new Map<string, number>()

  constructor (options: WorkerOptions) {
    this.#o = options
    // A send always ends (or is cut) before the lease does, so no other replica can claim the
    // events while this one may still be sending them.
    this.#attemptTimeoutMs = attemptTimeout(options.config)
  }

  start (): void {
    for (let i = 0; i < this.#o.concurrency; i++) this.#loops.push(this.#loop(i))
  }

  /** Until when (ms) the connection's Write Key is paced after a 429 in this process, or undefined. */
  pacedUntil (connectionId: string): number | undefined {
    const until = this.#paced.get(connectionId)
    return until !== undefined && until > Date.now() ? until : undefined
  }

  /** Work arrived: idle loops look now instead of at their next poll. */
  wake (): void {
    for (const wake of this.#sleepers) wake()
  }

  /**
   * Stops claiming; sends in flight may finish for `graceMs`, then they are cut and their
   * deliveries released (due again at once, for this process after a restart or another replica).
   */
  async stop (graceMs: number): Promise<void> {
    this.#stopping = true
    this.wake()
    const all = Promise.all(this.#loops)
    let timer: NodeJS.Timeout | undefined
    const cut = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })
    await Promise.race([all, cut])
    clearTimeout(timer)
    this.#cancel.abort(new Error('shutting down'))
    await all
  }

  async #loop (index: number): Promise<void> {
    while (!this.#stopping) {
      let worked = false
      try {
        if (index === 0) await this.#purge()
        worked = await this.runOnce()
      } catch (error) {
        // Once per outage burst, not every poll of every loop.
        if (Date.now() - this.#lastError > 10_000) this.#o.log.error({ err: error }, 'delivery worker: claim failed')
        this.#lastError = Date.now()
      }
      if (!worked && !this.#stopping) await this.#sleep(this.#o.pollMs ?? POLL_MS)
    }
  }

  async #sleep (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#sleepers.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#sleepers.add(done)
    })
  }

  async #purge (): Promise<void> {
    const now = Date.now()
    if (now - this.#lastPurge < PURGE_EVERY_MS) return
    this.#lastPurge = now
    await this.#o.queue.purgeDelivered(now - this.#o.config.delivery.retentionMs)
  }

  /** One claim and its outcome; false when nothing was due. */
  async runOnce (): Promise<boolean> {
    const { queue, config } = this.#o
    const claimedAt = Date.now()
    for (const [connectionId, until] of this.#paced) if (until <= claimedAt) this.#paced.delete(connectionId)
    const claimed = await queue.claim(claimedAt, config.delivery.leaseMs, CLAIM_LIMIT, [...this.#paced.keys()])
    if (claimed.length === 0) return false
    const leaseEnd = claimedAt + config.delivery.leaseMs
    const outcomes = await this.#deliver(claimed, leaseEnd)
    await queue.finish(claimed.map((delivery, i) => ({ id: delivery.id, lease: delivery.lease, finish: outcomes[i]! })))
    const counts = new Map<Finish['kind'], number>()
    for (const outcome of outcomes) counts.set(outcome.kind, (counts.get(outcome.kind) ?? 0) + 1)
    for (const [kind, n] of counts) this.#o.onOutcome?.(kind, n)
    return true
  }

  async #deliver (claimed: ClaimedDelivery[], leaseEnd: number): Promise<Finish[]> {
    const { config, log } = this.#o
    const now = Date.now()
    const outcomes = new Array<Finish | undefined>(claimed.length)
    const first = claimed[0]!

    // Past its maximum age (a crash or a long outage kept it): a dead letter, not sent again.
    claimed.forEach((delivery, i) => {
      if (now > delivery.expiresMs) outcomes[i] = { kind: 'failed', upstreamStatus: null, error: 'the maximum age (DELIVERY_MAX_AGE_MS) passed before Segment accepted it', at: now }
    })

    let connection: ResolvedConnection | undefined
    try {
      connection = await this.#o.resolve(first.workspaceId, first.connectionId)
    } catch (error) {
      // A missing key or an endpoint no longer allowed: the operator can fix it, so retry.
      const message = error instanceof Error ? error.message : String(error)
      return claimed.map((delivery, i) => outcomes[i] ?? this.#retryOrFail(delivery, now, undefined, null, `cannot send: ${message}`))
    }
    if (connection === undefined) {
      // Deleted meanwhile: its deliveries went with it (ON DELETE CASCADE); nothing to record.
      return claimed.map(() => ({ kind: 'release' }))
    }

    // Join the events into requests within the batch limits; a solo delivery goes alone.
    const requests: Outgoing[] = []
    let current: Outgoing | undefined
    // OAuth sources carry the Write Key in the body too, counted in the limit.
    const maxBytes = config.segment.maxBatchBytes - (connection.oauth === undefined ? 0 : Buffer.byteLength(writeKeyField(connection.writeKey)))
    claimed.forEach((delivery, i) => {
      if (outcomes[i] !== undefined) return
      let lines: string[]
      try {
        if (delivery.payload === undefined) throw new Error('its events are missing')
        lines = openItems(this.#o.ring, delivery.payload, deliveryAad(delivery.workspaceId, delivery.connectionId, delivery.id))
      } catch (error) {
        outcomes[i] = this.#retryOrFail(delivery, now, undefined, null, `cannot open the queued events: ${(error as Error).message}`)
        return
      }
      if (delivery.solo) current = undefined
      for (const line of lines) {
        const size = Buffer.byteLength(line)
        if (current === undefined || current.lines.length + 1 > MAX_BATCH_EVENTS ||
            BATCH_OVERHEAD_BYTES + current.bytes + (current.lines.length === 0 ? 0 : 1) + size > maxBytes) {
          current = { lines: [], bytes: 0, members: new Set() }
          requests.push(current)
        }
        current.bytes += (current.lines.length === 0 ? 0 : 1) + size
        current.lines.push(line)
        current.members.add(i)
      }
      if (delivery.solo) current = undefined
    })

    // Starting a send that the lease could cut would let another replica send the same events.
    if (Date.now() + this.#attemptTimeoutMs > leaseEnd || this.#cancel.aborted) {
      return claimed.map((_d, i) => outcomes[i] ?? { kind: 'release' })
    }

    const results = await Promise.all(requests.map(async (request) => await this.#send(connection, claimed, request)))

    // Per delivery: any refusal decides, then any retryable failure, else delivered.
    const worst = new Map<number, Sent>()
    const joined = new Set<number>()
    requests.forEach((request, r) => {
      const result = results[r]!
      for (const i of request.members) {
        if (request.members.size > 1) joined.add(i)
        const before = worst.get(i)
        if (before === undefined || rank(result) > rank(before)) worst.set(i, result)
      }
    })
    let paceUntil: number | undefined
    claimed.forEach((delivery, i) => {
      if (outcomes[i] !== undefined) return
      const result = worst.get(i)!
      if (result.ok) {
        outcomes[i] = { kind: 'delivered', upstreamStatus: result.status, at: Date.now() }
      } else if ('released' in result) {
        outcomes[i] = { kind: 'release' }
      } else if (!result.retryable) {
        outcomes[i] = joined.has(i) && !delivery.solo
          ? { kind: 'isolate' }
          : { kind: 'failed', upstreamStatus: result.status, error: result.error, at: Date.now() }
      } else {
        const outcome = this.#retryOrFail(delivery, Date.now(), result.retryAfterMs, result.status, result.error)
        outcomes[i] = outcome
        if (result.status === 429 && outcome.kind === 'retry') paceUntil = Math.max(paceUntil ?? 0, outcome.nextAttemptMs)
      }
    })
    if (paceUntil !== undefined) {
      // This Write Key's other queued deliveries wait too, and so do new ones (in this process; a
      // replica learns from its own 429); other connections are not slowed.
      this.#paced.set(first.connectionId, paceUntil)
      await this.#o.queue.pace(first.connectionId, Date.now(), paceUntil).catch((error: unknown) => {
        log.warn({ err: error, connectionId: first.connectionId }, 'delivery worker: could not pace the connection')
      })
    }
    return outcomes as Finish[]
  }

  #retryOrFail (delivery: ClaimedDelivery, now: number, retryAfterMs: number | undefined, status: number | null, error: string): Finish {
    const { backoffMaxMs } = this.#o.config.delivery
    const ceiling = Math.min(backoffMaxMs, BACKOFF_BASE_MS * 2 ** Math.min(30, Math.max(0, delivery.attempts - 1)))
    const jitter = Math.floor((this.#o.random ?? Math.random)() * ceiling)
    const wait = Math.max(jitter, Math.min(retryAfterMs ?? 0, backoffMaxMs))
    const next = now + wait
    if (next > delivery.expiresMs) {
      return { kind: 'failed', upstreamStatus: status, error: `${error}; the maximum age (DELIVERY_MAX_AGE_MS) passed before Segment accepted it`, at: now }
    }
    return { kind: 'retry', nextAttemptMs: next, upstreamStatus: status, error }
  }

  async #send (connection: ResolvedConnection, claimed: ClaimedDelivery[], request: Outgoing): Promise<Sent> {
    const credentials = this.#o.oauthCredentials?.(connection)
    const tail = credentials === undefined ? '' : writeKeyField(connection.writeKey)
    const head = Buffer.from('{"batch":[' + request.lines.join(',') + ']' + tail + ',"sentAt":"')
    const attempt = Math.max(...[...request.members].map((i) => claimed[i]!.attempts))
    const report: AttemptLog = {
      connectionId: connection.record.id,
      workspaceId: connection.record.workspaceId,
      deliveries: request.members.size,
      events: request.lines.length,
      bytes: head.length + 24 + 2,
      upstreamStatus: undefined,
      attempt,
      durationMs: 0
    }
    let sent: Sent
    try {
      const result = await this.#o.client.send({
        baseUrl: connection.baseUrl,
        path: '/v1/batch',
        writeKey: connection.writeKey,
        render: (sentAt) => Buffer.concat([head, Buffer.from(sentAt.toISOString() + '"}', 'latin1')]),
        credentials,
        signal: this.#cancel
      }, {
        onAttempt: ({ status, durationMs }) => {
          report.upstreamStatus = status
          report.durationMs = Math.round(durationMs)
        }
      })
      sent = { ok: true, status: result.upstreamStatus }
    } catch (error) {
      if (this.#cancel.aborted || !(error instanceof AppError)) {
        sent = { ok: false, released: true }
      } else {
        const status = typeof error.extras.upstreamStatus === 'number' ? error.extras.upstreamStatus : null
        sent = error.code === 'segment_rejected'
          ? { ok: false, retryable: false, status, retryAfterMs: undefined, error: `Segment answered ${status ?? '?'}${error.extras.upstreamBody === undefined || error.extras.upstreamBody === '' ? '' : `: ${error.extras.upstreamBody}`}` }
          : { ok: false, retryable: true, status, retryAfterMs: error.retryAfter === undefined ? undefined : error.retryAfter * 1000, error: error.message }
      }
    }
    this.#o.onAttempt?.(report)
    return sent
  }
}

function rank (sent: Sent): number {
  if (sent.ok) return 0
  if ('released' in sent) return 1
  return sent.retryable ? 2 : 3
}

/** The per-attempt timeout of queued sends: SEGMENT_ATTEMPT_TIMEOUT_MS, cut to leave a fifth of the lease spare. */
export function attemptTimeout (config: Pick<Config, 'segment' | 'delivery'>): number {
  return Math.max(1, Math.min(config.segment.attemptTimeoutMs, Math.floor(config.delivery.leaseMs * 0.8) - 50))
}
