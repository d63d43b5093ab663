// The part of autocannon's API the harness uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface Request {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string | Buffer
  }

  export interface Options {
    url: string
    connections?: number
    pipelining?: number
    duration?: number
    amount?: number
    timeout?: number
    requests?: Request[]
    overallRate?: number
  }

  export interface Result {
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    requests: { total: number }
  }

  export interface Instance extends EventEmitter, PromiseLike<Result> {
    on (event: 'response', listener: (client: unknown, statusCode: number, resBytes: number, responseTime: number) => void): this
    on (event: string, listener: (...args: unknown[]) => void): this
  }

  function autocannon (options: Options): Instance
  export default autocannon
}
