// Coalescing (api.md § Coalescing): concurrent calls for one connection share upstream requests.
//
// The rule is natural batching, as PostgreSQL's group commit and promise-batcher's queuing
// thresholds do it, with no linger timer (Kafka's linger.ms would add its wait to every lone call):
// a lane (connection + base URL + credentials) with nothing in flight sends a call at once, to its
// own path; calls that arrive while the lane has a request in flight (retry waits included) wait
// for it, and each time one of its requests ends, everything waiting goes out together in
// `/v1/batch` bodies within the batch limits (batcher.ts). The busier the lane, the larger the
// batches; an idle lane adds no wait.
import { AppError } from '../errors.js'
import { MAX_BATCH_EVENTS, BatchAssembler, planBatches, type BatchPart } from './batcher.js'
import { Cancel, onAbort, type AttemptReport, type CancelSignal, type SegmentClient, type SendResult } from './client.js'
import type { UpstreamCredentials } from './credentials.js'

export interface CoalesceOptions {
  /** Off: every call is sent alone, at once (COALESCE=off). */
  enabled: boolean
  /** Time budget of each call, from its arrival, waiting included. */
  deadlineMs: number
  maxBatchBytes: number
  maxBatchEvents?: number
  /** Events that may wait in one lane; past it a call is refused with 503 overloaded. */
  maxWaitingEvents: number
  /** Once per upstream request, with the events it carries. */
  onRequest?: (events: number) => void
  /** Once per upstream attempt (not per caller). */
  onAttempt?: (report: AttemptReport) => void
}

/** What the lane needs of a built call (build.ts's UpstreamRequest fits). */
export interface CoalescedUpstream {
  path: string
  events: number
  render: (sentAt: Date) => Buffer
  part: () => BatchPart | undefined
}

export interface CoalesceCall {
  /** Calls with the same lane may share a request: see laneKey(). */
  lane: string
  baseUrl: string
  writeKey: string
  upstream: CoalescedUpstream
  /**
   * Top-level fields of a joined body besides `batch` and `sentAt` (an OAuth source's `writeKey`):
   * the same for every call of a lane, whose key includes the credentials.
   */
  topLevel?: Record<string, unknown>
  /** OAuth sources: a bearer token instead of Basic (the lane's key includes the credentials). */
  credentials?: UpstreamCredentials | undefined
  /** The caller gave up: it is answered at once; the request it was in goes on for the others. */
  signal?: CancelSignal
}

export interface CallerHooks {
  /** When a request carrying the call goes out, with the events that request carries. */
  onSent?: (upstreamEvents: number) => void
  /** Each attempt of a request carrying the call, numbered as the caller counts them. */
  onAttempt?: (report: AttemptReport) => void
}

export interface CoalesceResult extends SendResult {
  /** Events in the upstream request that carried the call (1 for a lone call). */
  upstreamEvents: number
}

/**
 * The lane of a connection's calls: they may share a request only when everything that reaches
 * Segment besides the events is the same. `credentials` is what authenticates the request (the
 * Write Key today); the key stays in memory, as the Write Key itself does.
 */
export function laneKey (connectionId: string, baseUrl: string, credentials: string): string {
  return connectionId + '\0' + baseUrl + '\0' + credentials
}

interface Waiter {
  readonly call: CoalesceCall
  readonly hooks: CallerHooks
  readonly events: number
  readonly deadline: number
  readonly resolve: (result: CoalesceResult) => void
  readonly reject: (error: unknown) => void
  settled: boolean
  /** Attempts made by earlier requests that carried the call (a joined request that was refused). */
  attemptsBefore: number
  /** Called when the caller gives up; replaced as the call moves from waiting to in flight. */
  onGone: () => void
  stopListening: () => void
}

interface Lane {
  readonly key: string
  waiting: Waiter[]
  waitingEvents: number
  inFlight: number
}

export class Coalescer {
  readonly #client: SegmentClient
  readonly #options: CoalesceOptions
  readonly #lanes = new Map<string, Lane>()

  constructor (client: SegmentClient, options: CoalesceOptions) {
    this.#client = client
    this.#options = options
  }

  /** Lanes with something in flight or waiting (for tests and metrics). */
  get lanes (): number {
    return this.#lanes.size
  }

  /** Events waiting for company, over all lanes (for tests and metrics). */
  get waitingEvents (): number {
    let events = 0
    for (const lane of this.#lanes.values()) events += lane.waitingEvents
    return events
  }

  /** Sends the call, alone or with others of its lane; resolves or rejects for this caller only. */
  async send (call: CoalesceCall, hooks: CallerHooks = {}): Promise<CoalesceResult> {
    const { signal } = call
    if (signal?.aborted === true) throw signal.reason
    const deadline = performance.now() + this.#options.deadlineMs
    if (!this.#options.enabled) return await this.#alone(call, hooks, deadline)

    let lane = this.#lanes.get(call.lane)
    const events = call.upstream.events
    if (lane !== undefined && lane.waitingEvents + events > this.#options.maxWaitingEvents) {
      throw new AppError('overloaded', `Too many events are waiting for this connection's requests to Segment (at most ${this.#options.maxWaitingEvents}); retry shortly.`, {}, 1)
    }
    return await new Promise<CoalesceResult>((resolve, reject) => {
      const waiter: Waiter = {
        call, hooks, events, deadline, resolve, reject, settled: false, attemptsBefore: 0, onGone: () => {}, stopListening: () => {}
      }
      if (signal !== undefined) waiter.stopListening = onAbort(signal, () => { waiter.onGone() })
      if (lane === undefined) {
        lane = { key: call.lane, waiting: [], waitingEvents: 0, inFlight: 0 }
        this.#lanes.set(call.lane, lane)
      }
      if (lane.inFlight === 0) {
        this.#start(lane, [waiter])
        return
      }
      const waitingLane = lane
      waitingLane.waiting.push(waiter)
      waitingLane.waitingEvents += events
      waiter.onGone = () => {
        const index = waitingLane.waiting.indexOf(waiter)
        if (index >= 0) {
          waitingLane.waiting.splice(index, 1)
          waitingLane.waitingEvents -= events
        }
        settle(waiter, undefined, signal?.reason)
        this.#release(waitingLane)
      }
    })
  }

  /** COALESCE=off: today's path, one request per call. */
  async #alone (call: CoalesceCall, hooks: CallerHooks, deadline: number): Promise<CoalesceResult> {
    this.#options.onRequest?.(call.upstream.events)
    hooks.onSent?.(call.upstream.events)
    const result = await this.#client.send({
      baseUrl: call.baseUrl, path: call.upstream.path, writeKey: call.writeKey, credentials: call.credentials, render: call.upstream.render, signal: call.signal, deadline
    }, {
      onAttempt: (report) => {
        this.#options.onAttempt?.(report)
        hooks.onAttempt?.(report)
      }
    })
    return { ...result, upstreamEvents: call.upstream.events }
  }

  #start (lane: Lane, group: Waiter[]): void {
    lane.inFlight++
    const done = (): void => {
      lane.inFlight--
      this.#flush(lane)
      this.#release(lane)
    }
    this.#carry(group).then(done,
      /* c8 ignore next 5 */
      (error: unknown) => {
        // Unreachable: #carry catches what sending throws and settles every caller itself. Kept so
        // that a bug there cannot leave callers waiting forever or the lane busy.
        for (const waiter of group) settle(waiter, undefined, error)
        done()
      })
  }

  /** Everything waiting goes out now, in as few batches as the limits allow. */
  #flush (lane: Lane): void {
    if (lane.waiting.length === 0) return
    const waiting = lane.waiting
    lane.waiting = []
    lane.waitingEvents = 0
    const limits = { maxBatchBytes: this.#options.maxBatchBytes, maxBatchEvents: this.#options.maxBatchEvents ?? MAX_BATCH_EVENTS, topLevel: waiting[0]!.call.topLevel }
    for (const group of planBatches(waiting, (waiter) => waiter.call.upstream.part(), limits)) this.#start(lane, group)
  }

  #release (lane: Lane): void {
    if (lane.inFlight === 0 && lane.waiting.length === 0 && this.#lanes.get(lane.key) === lane) this.#lanes.delete(lane.key)
  }

  /**
   * One upstream request for `group`, with its retries; never rejects. A group of one is sent as
   * that call alone (its own path and body). A joined request that Segment refuses for good is
   * split: each call is sent again alone, so only a call Segment refuses gets the 502.
   */
  async #carry (group: Waiter[]): Promise<void> {
    // Every caller is still waiting here: one that left while waiting was taken out of the lane,
    // and nothing awaits between a group's planning and this.
    const live = group
    const first = live[0]!.call
    const joined = live.length > 1
    let path = first.upstream.path
    let render = first.upstream.render
    let events = first.upstream.events
    if (joined) {
      const assembler = new BatchAssembler({ maxBatchBytes: Infinity, maxBatchEvents: Infinity, topLevel: first.topLevel })
      for (const waiter of live) assembler.add(waiter.call.upstream.part()!)
      path = '/v1/batch'
      render = (sentAt) => assembler.render(sentAt)
      events = assembler.events
    }

    // The request stops early only when every caller in it has gone.
    const cancel = new Cancel()
    let deadline = Infinity
    for (const waiter of live) {
      deadline = Math.min(deadline, waiter.deadline)
      waiter.onGone = () => {
        settle(waiter, undefined, waiter.call.signal?.reason)
        if (live.every((w) => w.settled)) cancel.abort(waiter.call.signal?.reason)
      }
      waiter.hooks.onSent?.(events)
    }
    this.#options.onRequest?.(events)

    let result: SendResult
    try {
      result = await this.#client.send({ baseUrl: first.baseUrl, path, writeKey: first.writeKey, credentials: first.credentials, render, signal: cancel, deadline }, {
        onAttempt: (report) => {
          this.#options.onAttempt?.(report)
          for (const waiter of live) {
            if (!waiter.settled) waiter.hooks.onAttempt?.({ ...report, attempt: report.attempt + waiter.attemptsBefore })
          }
        }
      })
    } catch (error) {
      if (joined && error instanceof AppError && error.code === 'segment_rejected') {
        // Every error send() throws after an attempt carries its attempts.
        const attempts = error.extras.attempts!
        await Promise.all(live.filter((waiter) => !waiter.settled).map(async (waiter) => {
          waiter.attemptsBefore += attempts
          await this.#carry([waiter])
        }))
        return
      }
      for (const waiter of live) settle(waiter, undefined, withAttemptsBefore(error, waiter.attemptsBefore))
      return
    }
    for (const waiter of live) {
      settle(waiter, { upstreamStatus: result.upstreamStatus, attempts: result.attempts + waiter.attemptsBefore, upstreamEvents: events })
    }
  }
}

function settle (waiter: Waiter, result: CoalesceResult | undefined, error?: unknown): void {
  if (waiter.settled) return
  waiter.settled = true
  waiter.stopListening()
  if (result === undefined) waiter.reject(error)
  else waiter.resolve(result)
}

/** The error as this caller sees it: attempts of the refused joined request counted in. */
function withAttemptsBefore (error: unknown, attemptsBefore: number): unknown {
  if (attemptsBefore === 0 || !(error instanceof AppError)) return error
  // Only errors of a resend reach here, and each carries its attempts.
  return new AppError(error.code, error.message, { ...error.extras, attempts: error.extras.attempts! + attemptsBefore }, error.retryAfter)
}
