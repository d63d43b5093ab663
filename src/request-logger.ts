import type { FastifyBaseLogger } from 'fastify'
import type { Bindings, ChildLoggerOptions, Level } from 'pino'

/**
 * `request.log`, made on its first use. Fastify gives every request `logger.child({ reqId })`, and
 * with the logger's wildcard redaction paths pino runs every path over each binding: about 3 µs
 * and 3.1 KiB per request (BENCHMARKS.md, round 4). A request that goes well never logs through
 * `request.log` (its one line comes from request-log.ts), so the child is made only when an error
 * or a warning is logged, with the same bindings and options: those lines still carry the reqId
 * and the same redaction.
 */
export class DeferredChildLogger implements FastifyBaseLogger {
  readonly #parent: FastifyBaseLogger
  readonly #bindings: Bindings
  readonly #options: ChildLoggerOptions
  #child: FastifyBaseLogger | undefined

  constructor (parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
  }

  /** Whether the real child exists yet (for tests). */
  get made (): boolean {
    return this.#child !== undefined
  }

  get level (): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level
  }

  set level (level: string) {
    this.#logger().level = level
  }

  fatal (...args: unknown[]): void { this.#log('fatal', args) }
  error (...args: unknown[]): void { this.#log('error', args) }
  warn (...args: unknown[]): void { this.#log('warn', args) }
  info (...args: unknown[]): void { this.#log('info', args) }
  debug (...args: unknown[]): void { this.#log('debug', args) }
  trace (...args: unknown[]): void { this.#log('trace', args) }
  silent (..._args: unknown[]): void {}

  child (bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options)
  }

  #log (level: Level, args: unknown[]): void {
    const logger = this.#logger()
    // Forwarded as given: pino reads its arguments positionally (object, message, format values).
    Reflect.apply(logger[level], logger, args)
  }

  #logger (): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options)
    return this.#child
  }
}

/** Fastify's `childLoggerFactory`. */
export function deferredChildLogger (logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new DeferredChildLogger(logger, bindings, options)
}
