// The log stream `serve` writes to: batched, flushed soon after a quiet line, drained on shutdown.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { LOG_FLUSH_MS, drainLog, productionLogStream } from '../src/server.js'

const line = (n: number): string => JSON.stringify({ n, msg: 'request completed', pad: 'x'.repeat(200) }) + '\n'
const lines = (file: string): string[] => readFileSync(file, 'utf8').split('\n').filter(Boolean)

t.test('a lone line is held for the batch, then written within the flush interval', async (t) => {
  const file = join(t.testdir(), 'out.log')
  const stream = productionLogStream(file)
  t.teardown(() => { stream.destroy() })
  await new Promise((resolve) => stream.once('ready', resolve))
  stream.write(line(1))
  t.same(lines(file), [], 'not written at once: under LOG_BUFFER_BYTES')
  const started = Date.now()
  while (lines(file).length === 0 && Date.now() - started < LOG_FLUSH_MS * 50) await sleep(10)
  t.same(lines(file).map((l) => (JSON.parse(l) as { n: number }).n), [1], 'written by the timer')
})

t.test('drainLog writes every buffered line, in order, with a write already in flight', async (t) => {
  const file = join(t.testdir(), 'out.log')
  const stream = productionLogStream(file)
  t.teardown(() => { stream.destroy() })
  await new Promise((resolve) => stream.once('ready', resolve))
  const count = 100
  // Enough to start an asynchronous write, then more behind it.
  for (let n = 0; n < count; n++) stream.write(line(n))
  await drainLog(stream)
  t.same(lines(file).map((l) => (JSON.parse(l) as { n: number }).n), Array.from({ length: count }, (_, n) => n))
})

t.test('a destroyed stream with a line pending does not make the timer throw', async (t) => {
  const file = join(t.testdir(), 'out.log')
  const stream = productionLogStream(file)
  await new Promise((resolve) => stream.once('ready', resolve))
  stream.write(line(1))
  stream.destroy()
  // An exception in the timer would be uncaught and fail this file.
  await sleep(LOG_FLUSH_MS * 3)
  t.pass('no exception after three flush intervals')
})
