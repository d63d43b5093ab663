import { once } from 'node:events'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { actionUrl, multiByteText, setupActions, type ActionName, type ActionsSetup } from './support/actions.js'

type Json = Record<string, unknown>

const small = { SEGMENT_MAX_EVENT_BYTES: '2000', SEGMENT_MAX_BATCH_BYTES: '10000' }

async function dryRunBytes (t: Test, setup: ActionsSetup, action: ActionName, body: unknown): Promise<number> {
  const response = await setup.send(action, body, { query: 'dryRun=true' })
  t.equal(response.statusCode, 200, 'dry run answers 200')
  return response.json().bytes as number
}

function checkTooLarge (t: Test, response: LightMyRequestResponse, expected: Json): Json {
  t.equal(response.statusCode, 413, '413')
  t.match(response.headers['content-type'], /^application\/problem\+json/, 'problem+json')
  const body = response.json()
  t.match(body, { status: 413, code: 'payload_too_large', title: 'Payload too large', detail: String, ...expected })
  return body
}

/**
 * A single call padded (in the multi-byte text of `field`.note) to exactly `limit` bytes upstream:
 * accepted at the limit, 413 one byte over, and nothing sent for the 413.
 */
async function singleAtLimit (t: Test, setup: ActionsSetup, limit: number, action: ActionName, base: Json, field: string): Promise<void> {
  const withNote = (note: string): Json => ({ ...base, [field]: { plan: 'pro', note } })
  const pad = limit - await dryRunBytes(t, setup, action, withNote(''))
  const atLimit = withNote(multiByteText(pad))
  t.ok(String((atLimit[field] as Json).note).length < pad, 'characters and bytes differ')
  t.equal(await dryRunBytes(t, setup, action, atLimit), limit, 'dry run measures exactly the limit')

  const sentBefore = setup.fake.requests.length
  const accepted = await setup.send(action, atLimit)
  t.equal(accepted.statusCode, 200, `${action}: exactly ${limit} bytes is accepted`)
  t.equal(accepted.json().bytes, limit)
  t.equal(setup.fake.requests.length, sentBefore + 1)
  t.equal(Buffer.byteLength(setup.fake.requests.at(-1)!.rawBody), limit, 'the raw upstream body is exactly the limit')

  const over = withNote(multiByteText(pad + 1))
  const refused = await setup.send(action, over)
  const problem = checkTooLarge(t, refused, { limit, size: limit + 1 })
  t.notOk('index' in problem, 'no index for a single call')
  const largest = problem.largestFields as Array<{ path: string, bytes: number }>
  t.same(largest[0], { path: `/${field}`, bytes: Buffer.byteLength(JSON.stringify(over[field])) }, `the biggest field first: /${field}`)
  t.ok(largest.length > 1 && largest.every((entry, i) => i === 0 || entry.bytes <= largest[i - 1]!.bytes), 'biggest first')
  t.equal(setup.fake.requests.length, sentBefore + 1, 'nothing sent for the 413')
}

t.test('single calls: exactly SEGMENT_MAX_EVENT_BYTES passes, one byte more is 413', async (t) => {
  const setup = await setupActions(t, small)
  await singleAtLimit(t, setup, 2000, 'track-event', { userId: 'u-é', event: 'Order Completed 🎉' }, 'properties')
  await singleAtLimit(t, setup, 2000, 'identify-user', { anonymousId: 'a1', timestamp: '2025-03-14T09:26:53.589Z' }, 'traits')
  await singleAtLimit(t, setup, 2000, 'group-user', { userId: 'u', groupId: 'g' }, 'traits')
  await singleAtLimit(t, setup, 2000, 'page-view', { userId: 'u', name: 'Pricing' }, 'properties')
})

t.test('a batch item over the per-event limit only because the top-level context is merged in', async (t) => {
  const setup = await setupActions(t, small)
  const limit = 2000
  const context = { campaign: { source: multiByteText(700) } }
  const batchWith = (pad: number, withContext = true): Json => ({
    batch: [
      { type: 'identify', userId: 'u' },
      { type: 'track', userId: 'u', event: 'Small' },
      { type: 'track', userId: 'u', event: 'Big', properties: { note: multiByteText(pad) } }
    ],
    ...(withContext ? { context } : {})
  })
  // Far enough over with the context merged in; the 413 says by how much.
  const first = checkTooLarge(t, await setup.send('batch-send', batchWith(1600)), { limit, index: 2 })
  const pad = 1600 - ((first.size as number) - limit)
  t.equal(setup.fake.requests.length, 0, 'nothing sent')

  // Item 2 alone is well under the limit: without the batch context it goes through.
  const alone = await setup.send('batch-send', batchWith(pad + 1, false))
  t.equal(alone.statusCode, 200, 'the same item without the top-level context is accepted')
  const sentItem = (setup.fake.requests[0]!.body as { batch: Json[] }).batch[2]!
  t.ok(Buffer.byteLength(JSON.stringify(sentItem)) < limit - 700, 'the item itself is far below the limit')

  const atLimit = await setup.send('batch-send', batchWith(pad))
  t.equal(atLimit.statusCode, 200, 'merged item exactly at the limit is accepted')
  t.equal(setup.fake.requests.length, 2)

  const over = checkTooLarge(t, await setup.send('batch-send', batchWith(pad + 1)), { limit, size: limit + 1, index: 2 })
  const paths = (over.largestFields as Array<{ path: string }>).map((entry) => entry.path)
  t.same(paths.slice(0, 2).sort(), ['/context', '/properties'], 'the merged context and the properties are the biggest fields')
  t.equal(setup.fake.requests.length, 2, 'nothing sent for the 413')
})

/** A batch of `count` items whose whole upstream body is exactly `target` bytes. */
async function batchOfExactly (t: Test, setup: ActionsSetup, count: number, target: number): Promise<(extra: number) => Json> {
  const make = (pads: number[]): Json => ({
    batch: pads.map((pad, index) => ({ type: index % 2 === 0 ? 'track' : 'page', userId: `user-${index}`, event: 'Viewed', properties: { note: multiByteText(pad) } })),
    integrations: { All: true }
  })
  const empty = await dryRunBytes(t, setup, 'batch-send', make(new Array<number>(count).fill(0)))
  const room = target - empty
  const each = Math.floor(room / count)
  const pads = new Array<number>(count).fill(each)
  pads[0]! += room - each * count
  return (extra) => make(pads.map((pad, index) => index === count - 1 ? pad + extra : pad))
}

t.test('a batch body at SEGMENT_MAX_BATCH_BYTES passes, one byte more is 413', async (t) => {
  const setup = await setupActions(t, small)
  const limit = 10000
  const batch = await batchOfExactly(t, setup, 7, limit)
  t.equal(await dryRunBytes(t, setup, 'batch-send', batch(0)), limit)
  const accepted = await setup.send('batch-send', batch(0))
  t.equal(accepted.statusCode, 200)
  t.equal(accepted.json().bytes, limit)
  t.equal(Buffer.byteLength(setup.fake.requests[0]!.rawBody), limit, 'the raw upstream body is exactly the limit')

  const problem = checkTooLarge(t, await setup.send('batch-send', batch(1)), { limit, size: limit + 1 })
  t.notOk('index' in problem, 'no single item is the cause')
  const largest = problem.largestFields as Array<{ path: string, bytes: number }>
  t.match(largest[0], { path: /^\/batch\/\d+$/, bytes: Number })
  t.ok(largest.every((entry, i) => i === 0 || entry.bytes <= largest[i - 1]!.bytes), 'biggest first')
  t.equal(setup.fake.requests.length, 1, 'nothing sent for the 413')
})

t.test('the default limits are 32,000 and 500,000 bytes', async (t) => {
  const setup = await setupActions(t)
  t.equal(setup.config.segment.maxEventBytes, 32000)
  t.equal(setup.config.segment.maxBatchBytes, 500000)
  await singleAtLimit(t, setup, 32000, 'track-event', { userId: 'u', event: 'Big 🎉' }, 'properties')

  const batch = await batchOfExactly(t, setup, 20, 500000)
  const accepted = await setup.send('batch-send', batch(0))
  t.equal(accepted.statusCode, 200, 'a batch of exactly 500,000 bytes is accepted')
  t.equal(Buffer.byteLength(setup.fake.requests.at(-1)!.rawBody), 500000)
  const sent = setup.fake.requests.length
  checkTooLarge(t, await setup.send('batch-send', batch(1)), { limit: 500000, size: 500001 })
  t.equal(setup.fake.requests.length, sent, 'nothing sent for the 413')
})

const fiveMB = 5 * 1024 * 1024

function hugeBody (action: ActionName): string {
  const pad = 'x'.repeat(fiveMB)
  return action === 'batch-send'
    ? JSON.stringify({ batch: [{ type: 'track', userId: 'u', event: 'E', properties: { pad } }] })
    : JSON.stringify({ userId: 'u', event: 'E', properties: { pad } })
}

t.test('a 5 MB body is refused with 413 (inject)', async (t) => {
  const setup = await setupActions(t)
  for (const action of ['track-event', 'batch-send'] as const) {
    const response = await setup.app.inject({
      method: 'POST',
      url: actionUrl(setup.connectionId, action),
      headers: { ...setup.workspace.auth, 'content-type': 'application/json' },
      payload: hugeBody(action)
    })
    checkTooLarge(t, response, {})
  }
  t.equal(setup.fake.requests.length, 0, 'nothing sent')
})

interface StreamedAnswer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  /** Bytes of the body written when the answer arrived. */
  writtenAtAnswer: number
}

/**
 * Streams a body of `total` bytes over a real socket, but stops writing after `pauseAfter` bytes
 * and waits for the answer: a server that buffers the whole body before answering never answers
 * then, and the wait times out. Resolves with the answer.
 */
async function streamUntilAnswered (port: number, path: string, headers: Record<string, string>, total: number, pauseAfter: number): Promise<StreamedAnswer> {
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, headers })
  let written = 0
  const answered = new Promise<StreamedAnswer>((resolve, reject) => {
    req.on('response', (res) => {
      const writtenAtAnswer = written
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, writtenAtAnswer }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
  // Once answered, the server may close the socket under further writes; that is expected.
  answered.catch(() => {})
  const state = { answered: false }
  answered.then(() => { state.answered = true }, () => { state.answered = true })
  const chunk = Buffer.alloc(64 * 1024, 'x')
  chunk.write('{"userId":"u","event":"E","properties":{"pad":"')
  while (!state.answered && written < Math.min(total, pauseAfter)) {
    const flushed = req.write(chunk)
    written += chunk.length
    if (!flushed) await Promise.race([once(req, 'drain'), answered.catch(() => {})])
  }
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer after ${written} of ${total} bytes`)), 20_000)
  })
  try {
    return await Promise.race([answered, timeout])
  } finally {
    clearTimeout(timer)
    req.destroy()
  }
}

t.test('a 5 MB body over a real socket is answered 413 before it is all sent', async (t) => {
  const setup = await setupActions(t)
  await setup.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = setup.app.server.address() as AddressInfo
  for (const action of ['track-event', 'batch-send'] as const) {
    for (const framing of ['chunked', 'content-length'] as const) {
      const label = `${action}, ${framing}`
      const headers: Record<string, string> = { ...setup.workspace.auth, 'content-type': 'application/json' }
      if (framing === 'content-length') headers['content-length'] = String(fiveMB)
      // Both route limits (about 128 kB and 1 MB) are well below 2 MB.
      const answer = await streamUntilAnswered(port, actionUrl(setup.connectionId, action), headers, fiveMB, 2 * 1024 * 1024)
      t.equal(answer.status, 413, `${label}: 413`)
      t.match(answer.headers['content-type'], /^application\/problem\+json/)
      t.match(JSON.parse(answer.body), { status: 413, code: 'payload_too_large' }, `${label}: problem document`)
      t.ok(answer.writtenAtAnswer < fiveMB, `${label}: answered after ${answer.writtenAtAnswer} of ${fiveMB} bytes`)
      t.equal(answer.headers.connection, 'close', `${label}: the connection is closed rather than the rest read`)
    }
  }
  t.equal(setup.fake.requests.length, 0, 'nothing sent')
})
