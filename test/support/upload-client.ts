// Posts a large body the way a naive client does (write it all, then read the answer), in its own
// process so the service's socket and this client do not share an event loop. Run as
// `tsx upload-client.ts URL AUTHORIZATION fetch|http content-length|chunked BYTES ROUNDS`; prints
// one JSON line per round: {status, contentType, body} or {error}.
import { request as httpRequest } from 'node:http'

export interface UploadAnswer { status?: number, contentType?: string, body?: { code?: string, status?: number }, error?: string }

/** `size` bytes in 64 KiB chunks (the last one shorter). */
function * chunks (size: number): Generator<Buffer> {
  const chunk = Buffer.alloc(64 * 1024, 'a')
  for (let sent = 0; sent < size; sent += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - sent))
}

async function withFetch (url: string, auth: string, framing: string, size: number): Promise<UploadAnswer> {
  const headers = { authorization: auth, 'content-type': 'application/json' }
  const response = framing === 'content-length'
    ? await fetch(url, { method: 'POST', headers, body: Buffer.concat([...chunks(size)]) })
    : await fetch(url, {
      method: 'POST',
      headers,
      body: new ReadableStream({
        start (controller) {
          for (const chunk of chunks(size)) controller.enqueue(new Uint8Array(chunk))
          controller.close()
        }
      }),
      duplex: 'half'
    } as RequestInit)
  return { status: response.status, contentType: response.headers.get('content-type') ?? undefined, body: await response.json() as UploadAnswer['body'] }
}

async function withHttp (url: string, auth: string, framing: string, size: number): Promise<UploadAnswer> {
  return await new Promise<UploadAnswer>((resolve, reject) => {
    const headers: Record<string, string | number> = { authorization: auth, 'content-type': 'application/json' }
    if (framing === 'content-length') headers['content-length'] = size
    const req = httpRequest(url, { method: 'POST', headers, agent: false }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (part: Buffer) => parts.push(part))
      res.on('end', () => {
        resolve({ status: res.statusCode, contentType: res.headers['content-type'], body: JSON.parse(Buffer.concat(parts).toString('utf8')) as UploadAnswer['body'] })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    const body = chunks(size)
    const write = (): void => {
      for (let next = body.next(); next.done !== true; next = body.next()) {
        if (!req.write(next.value)) {
          req.once('drain', write)
          return
        }
      }
      req.end()
    }
    write()
  })
}

const [url, auth, client, framing, bytes, rounds] = process.argv.slice(2) as [string, string, string, string, string, string]
for (let round = 0; round < Number(rounds); round++) {
  const answer = await (client === 'fetch' ? withFetch : withHttp)(url, auth, framing, Number(bytes))
    .catch((error: Error & { cause?: { code?: string } }) => ({ error: `${error.message} ${error.cause?.code ?? (error as { code?: string }).code ?? ''}`.trim() }))
  process.stdout.write(`${JSON.stringify(answer)}\n`)
}
