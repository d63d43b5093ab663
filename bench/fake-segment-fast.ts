// The fastest Segment stand-in: keep-alive, reads and drops the body, answers 200 at once, records
// nothing. The service and the baseline forward to the same one, so its cost is common to both.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

const answer = Buffer.from('{"success":true}')
const headers = { 'content-type': 'application/json', 'content-length': String(answer.length) }

export interface FastFake {
  url: string
  /** Requests answered so far. */
  requests: () => number
  close: () => Promise<void>
}

export async function startFastFake (port = 0): Promise<FastFake> {
  let requests = 0
  const server: Server = createServer((request, response) => {
    request.on('data', noop)
    request.on('end', () => {
      requests++
      response.writeHead(200, headers)
      response.end(answer)
    })
  })
  // Longer than any pause between scenarios, so pooled sockets are never closed under a request.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 125_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await closed
    }
  }
}

function noop (): void {}
