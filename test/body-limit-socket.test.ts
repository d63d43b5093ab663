// A body over the route's limit, sent over a real socket by clients that write their whole body
// before reading the answer (Node's fetch and http): they must read the 413 problem document, not
// a broken pipe or a reset, whether the body has a Content-Length or is chunked.
import t from 'tap'
import { execFile } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { build, createConnection, createWorkspace } from './helper.js'
import type { UploadAnswer } from './support/upload-client.js'

const MB = 1024 * 1024
const ROUNDS = 5
const uploadClient = new URL('./support/upload-client.ts', import.meta.url).pathname
const tsx = new URL('../node_modules/.bin/tsx', import.meta.url).pathname

/** Runs the client in its own process, `ROUNDS` times in a row; one answer per round. */
async function upload (url: string, auth: string, client: 'fetch' | 'http', framing: 'content-length' | 'chunked', bytes: number): Promise<UploadAnswer[]> {
  const { stdout } = await promisify(execFile)(tsx, [uploadClient, url, auth, client, framing, String(bytes), String(ROUNDS)], { maxBuffer: MB })
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
