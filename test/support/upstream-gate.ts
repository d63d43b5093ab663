// Holds the service's upstream requests at a gate until the test opens it, so a test can keep a
// request "in flight" for exactly as long as it needs, without timing. The requests then go on to
// the real (fake Segment) upstream through a real undici Pool.
//
//   const gate = upstreamGate()
//   build(t, env, { dispatcher: gate.dispatcher })
//   const first = send(...)          // not awaited
//   await gate.arrived(1)            // the first request is waiting at the gate
//   ... requests that must see it in flight ...
//   gate.open()                      // it goes upstream, and so does everything after it
import { Pool, type Dispatcher } from 'undici'

export interface UpstreamGate {
  dispatcher: (origin: string) => Dispatcher
  /** Resolves once `count` requests have reached the gate (waiting, or passed once it is open). */
  arrived: (count: number) => Promise<void>
  open: () => void
}

export function upstreamGate (): UpstreamGate {
  let isOpen = false
  let count = 0
  const held: Array<() => void> = []
  const waiters: Array<{ count: number, resolve: () => void }> = []
  const notify = (): void => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (count >= waiters[i]!.count) waiters.splice(i, 1)[0]!.resolve()
    }
  }
  const gated: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (options, handler) => {
    count++
    notify()
    if (isOpen) return dispatch(options, handler)
    held.push(() => { dispatch(options, handler) })
    return true
  }
  return {
    dispatcher: (origin) => new Pool(origin).compose(gated),
    arrived: async (wanted) => {
      if (count >= wanted) return
      await new Promise<void>((resolve) => waiters.push({ count: wanted, resolve }))
    },
    open: () => {
      isOpen = true
      for (const release of held.splice(0)) release()
    }
  }
}
