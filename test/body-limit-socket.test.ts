// A body over the route's limit, sent over a real socket by clients that write their whole body
// before reading the answer (Node's fetch and http): they must read the 413 problem document, not
// a broken pipe or a reset, whether the body has a Content-Length or is chunked.
import t from 'tap'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { build, createConnection, createWorkspace } from './helper.js'
import type { UploadAnswer } from './support/upload-client.js'
import { withoutCoverage } from './support/process.js'

const MB = 1024 * 1024
const ROUNDS = 5
const uploadClient = new URL('./support/upload-client.ts', import.meta.url).pathname
const tsx = new URL('../node_modules/.bin/tsx', import.meta.url).pathname

/** Runs the client in its own process, `ROUNDS` times in a row; one answer per round. */
async function upload (url: string, auth: string, client: 'fetch' | 'http', framing: 'content-length' | 'chunked', bytes: number): Promise<UploadAnswer[]> {
  const { stdout } = await promisify(execFile)(tsx, [uploadClient, url, auth, client, framing, String(bytes), String(ROUNDS)], { maxBuffer: MB, env: withoutCoverage(process.env) })
  return stdout.trim().split('\n').map((line) => JSON.parse(line) as UploadAnswer)
}

t.test('a 5 MB body gets the 413 problem document with fetch and http, Content-Length and chunked', async (t) => {
  const { app } = await build(t)
  const workspace = await createWorkspace(app)
  const connection = await createConnection(app, workspace)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}/v1/connections/${connection.id}/actions/track-event`

  for (const client of ['fetch', 'http'] as const) {
    for (const framing of ['content-length', 'chunked'] as const) {
      const answers = await upload(url, workspace.auth.authorization, client, framing, 5 * MB)
      t.equal(answers.length, ROUNDS)
      answers.forEach((answer, round) => {
        t.match(answer, { status: 413, contentType: /^application\/problem\+json/, body: { status: 413, code: 'payload_too_large' } }, `${client}, ${framing}, round ${round + 1}: ${JSON.stringify(answer)}`)
      })
    }
  }
  const after = await fetch(`${url}?dryRun=true`, {
    method: 'POST',
    headers: { ...workspace.auth, 'content-type': 'application/json' },
    body: JSON.stringify({ userId: 'u1', event: 'Still There' })
  })
  t.equal(after.status, 200, 'the service answers the next request')
})

t.test('the discarding is bounded: past about 10 MB the connection is closed', async (t) => {
  const { app } = await build(t)
  const workspace = await createWorkspace(app)
  const connection = await createConnection(app, workspace)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(`POST /v1/connections/${connection.id}/actions/track-event HTTP/1.1\r\nhost: x\r\n${Object.entries({ ...workspace.auth, 'content-type': 'application/json', 'transfer-encoding': 'chunked' }).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`)
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
  const closed = new Promise<void>((resolve) => {
    socket.once('close', () => { resolve() })
    socket.on('error', () => {})
  })
  // Up to 200 MB, as fast as the socket takes it, until the service closes the connection.
  const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 'a'), Buffer.from('\r\n')])
  let written = 0
  while (written < 200 * MB && !socket.destroyed && socket.writable) {
    if (!socket.write(chunk)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closed])
    written += 0x10000
  }
  await closed
  t.ok(written < 100 * MB, `the service closed the connection after ${Math.round(written / MB)} MB were written`)
  // Past the bound the answer (413, Connection: close) may be lost to the reset: that is the bound.
  t.ok(answer === '' || answer.startsWith('HTTP/1.1 413 '), 'nothing but the 413, if anything')
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, 'the service still answers')
})
