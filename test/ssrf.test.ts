// The endpoint allowlist against bypass attempts. Every fake is a real server on loopback; the
// hosts in the bypass spellings are only parsed, never connected to (this machine forbids traffic
// to anything but loopback, and so does the allowlist).
import t from 'tap'
import { build, createWorkspace, type TestContext, type TestWorkspace } from './helper.js'
import { fakeSegment } from './support/actions.js'
import { STEADY_ENV, basic } from './support/break.js'
import type { FakeSegment } from './fake-segment.js'
import type { FastifyInstance } from 'fastify'

/** Spellings that must be refused: another origin, or the allowed one in a non-canonical form. */
function bypasses (portA: number, portB: number): string[] {
  const A = `127.0.0.1:${portA}`
  const B = `127.0.0.1:${portB}`
  const long = 'a'.repeat(1900)
  return [
    // another port or scheme
    `http://${B}`, `http://${B}/`, 'http://127.0.0.1', 'http://127.0.0.1:80', `http://127.0.0.1:${portA + 1}`, `https://${A}`,
    `ws://${A}`, `ftp://${A}`, `gopher://${A}`, `blob:http://${A}`, `blob:http://${A}/`, 'file:///etc/passwd', 'data:text/plain,x',
    'javascript:alert(1)', `view-source:http://${A}`,
    // userinfo: the allowlisted host as a user name, or credentials in front of it
    `http://${A}@${B}`, `http://${A}@${B}/`, `http://user@${A}`, `http://user:pw@${A}`, `http://:@${A}`, `http://@${A}`,
    `http://${A}%40${B}`, `http://${B}#@${A}`, `http://${B}?@${A}`, `http://${B}\\@${A}`, `http://${A}\\@${B}`,
    `https://api.segment.io@${B}`, `http://api.segment.io@${B}`, `http://${A}:@${B}`,
    // trailing dots and other host spellings that normalise to 127.0.0.1
    `http://127.0.0.1.:${portA}`, `http://127.0.0.1..:${portA}`, `http://localhost:${portA}`, `http://localhost.:${portA}`,
    `http://LOCALHOST:${portA}`, `http://127.0.0.2:${portA}`, `http://0.0.0.0:${portA}`, `http://0:${portA}`,
    // numeric IP forms: decimal, hex, octal, short, IPv6 and IPv4-mapped IPv6
    `http://2130706433:${portA}`, `http://0x7f000001:${portA}`, `http://0X7F000001:${portA}`, `http://0x7f.0.0.1:${portA}`, `http://0x7f.0x0.0x0.0x1:${portA}`,
    `http://0177.0.0.1:${portA}`, `http://0177.0000.0000.0001:${portA}`, `http://017700000001:${portA}`, `http://127.1:${portA}`, `http://127.0.1:${portA}`,
    `http://127.000.000.001:${portA}`, `http://[::1]:${portA}`, `http://[::ffff:127.0.0.1]:${portA}`, `http://[::ffff:7f00:1]:${portA}`,
    `http://[0:0:0:0:0:ffff:127.0.0.1]:${portA}`, `http://[::127.0.0.1]:${portA}`, `http://[::ffff:7f00:0001]:${portA}`,
    // unicode: full-width digits, ideographic full stops, IDN homographs, invisible characters
    `http://１２７.０.０.１:${portA}`, `http://127。0。0。1:${portA}`, `http://127．0．0．1:${portA}`, `http://127.0.0.①:${portA}`,
    `http://127.0.0.1\u200b:${portA}`, `http://\u200b127.0.0.1:${portA}`, `http://127.0.0.1\u00ad:${portA}`, `http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:${portA}`,
    `http://lоcalhost:${portA}`, `http://xn--lcalhost-9qg:${portA}`, `http://127.0.0.1\u3002:${portA}`,
    // backslashes, missing or doubled slashes, no scheme
    `http:\\\\${A}`, `http:\\\\${A}\\`, `http:/${A}`, `http:${A}`, `http:///${A}`, `//${A}`, `//${B}`, `///${A}`, `\\\\${A}`,
    A, `127.0.0.1:${portA}/`, `localhost:${portA}`,
    // tabs, newlines, spaces, NUL
    `http://${A}\t`, `\thttp://${A}`, `http://127.0.0\t.1:${portA}`, `http://127.0.0.1:${String(portA).slice(0, 2)}\n${String(portA).slice(2)}`,
    `http://${A}\r\n`, ` http://${A}`, `http://${A} `, `http://${A}\u0000`, `http://127.0.0.1\u0000.example.com:${portA}`, `http://${A}\f`,
    // percent-encoded hosts and ports
    `http://%31%32%37.0.0.1:${portA}`, `http://127%2E0%2E0%2E1:${portA}`, `http://127.0.0.1%3A${portB}`, `http://127.0.0.1%2e:${portA}`,
    `http://%6c%6f%63%61%6c%68%6f%73%74:${portA}`,
    // paths, queries, fragments (a base URL is an origin and nothing else)
    `http://${A}/v1`, `http://${A}/v1/track`, `http://${A}/?x=1`, `http://${A}/#x`, `http://${A}/redirect?to=http://${B}`,
    `http://${A}/@${B}`, `http://${A}/%2f%2f${B}`, `http://${A}/${long}`,
    // nonsense
    '', ' ', 'http://', 'http://:80', `http://${A}:${portB}`, `http://[${A}]`, 'not a url', `http://${'a'.repeat(1990)}.${A}`
  ]
}

/**
 * Spellings WHATWG URL normalises to the allowed origin itself. The service may accept them, but
 * only as that exact origin; refusing is fine too.
 */
function sameOrigin (portA: number): string[] {
  const A = `127.0.0.1:${portA}`
  return [`HTTP://${A}`, `Http://${A}/`, `http://127.0.0.1:0${portA}`, `http://${A}/.`, `http://${A}/..`, `http://${A}/%2e%2e/`,
    `http://${A}\\`, `http://${A}?`, `http://${A}#`, `http://${A}/?`, `http://${A}/#`]
}

interface Setup {
  app: FastifyInstance
  workspace: TestWorkspace
  fakes: { A: FakeSegment, B: FakeSegment, C: FakeSegment, us: FakeSegment, eu: FakeSegment }
}

async function setup (t: TestContext, env: Record<string, string> = {}): Promise<Setup> {
  const fakes = { A: await fakeSegment(t), B: await fakeSegment(t), C: await fakeSegment(t), us: await fakeSegment(t), eu: await fakeSegment(t) }
  const { app } = await build(t, {
    SEGMENT_API_URL: fakes.us.url,
    SEGMENT_EU_API_URL: fakes.eu.url,
    // Only A. The hostname entry is parsed, never sent to: no connection in these tests uses it.
    SEGMENT_ALLOWED_ENDPOINTS: `${fakes.A.url},https://proxy.example.com`,
    SEGMENT_MAX_ATTEMPTS: '1',
    ...STEADY_ENV,
    ...env
  })
  const workspace = await createWorkspace(app)
  return { app, workspace, fakes }
}

const port = (fake: FakeSegment): number => Number(new URL(fake.url).port)
const keyOf = (authorization: unknown): string => Buffer.from(String(authorization).replace(/^Basic /, ''), 'base64').toString().replace(/:$/, '')

t.test('POST and PATCH refuse every bypass spelling; only the allowed fake ever receives a Write Key', async (t) => {
  const { app, workspace, fakes } = await setup(t)
  const portA = port(fakes.A)
  const portB = port(fakes.B)
  // Every Write Key is unique, so each received request says which connection sent it.
  let serial = 0
  const nextKey = (): string => `wk_ssrf_${String(++serial).padStart(4, '0')}`
  const expected = new Map<string, 'A' | 'us' | 'eu'>()
  const create = async (body: Record<string, unknown>) => await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'c', ...body } })

  const legit = { A: await create({ writeKey: 'wk_ssrf_A', endpoint: fakes.A.url }), us: await create({ writeKey: 'wk_ssrf_us' }), eu: await create({ writeKey: 'wk_ssrf_eu', region: 'eu' }) }
  for (const [target, response] of Object.entries(legit)) {
    t.equal(response.statusCode, 201, `legit ${target}`)
    expected.set(`wk_ssrf_${target}`, target as 'A' | 'us' | 'eu')
  }
  t.equal(legit.A.json().endpoint, fakes.A.url)
  const before = {
    A: legit.A.json(),
    us: legit.us.json()
  }

  const refusedBodies = new Set<string>()
  for (const endpoint of bypasses(portA, portB)) {
    const label = JSON.stringify(endpoint).slice(0, 120)
    const created = await create({ writeKey: nextKey(), endpoint })
    t.equal(created.statusCode, 400, `POST ${label}`)
    const code = created.json().code
    // Past the schema's 2,048 characters the body is invalid before the allowlist is asked.
    t.ok(code === 'endpoint_not_allowed' || (code === 'invalid_request' && endpoint.length > 2048), `POST ${label}: ${String(code)}`)
    if (code === 'endpoint_not_allowed') refusedBodies.add(created.body)
    for (const target of ['A', 'us'] as const) {
      const patched = await app.inject({ method: 'PATCH', url: `/v1/connections/${before[target].id}`, headers: workspace.auth, payload: { endpoint } })
      t.equal(patched.statusCode, 400, `PATCH (${target}) ${label}`)
    }
  }
  t.equal(refusedBodies.size, 1, 'every refusal is the same answer, naming nothing about the attempt')

  for (const endpoint of sameOrigin(portA)) {
    const key = nextKey()
    const created = await create({ writeKey: key, endpoint })
    if (created.statusCode === 201) {
      t.equal(created.json().endpoint, fakes.A.url, `accepted ${JSON.stringify(endpoint)} only as the canonical origin`)
      expected.set(key, 'A')
    } else {
      t.equal(created.json().code, 'endpoint_not_allowed', `refused ${JSON.stringify(endpoint)}`)
    }
  }

  // Regions are a closed set: no spelling of one smuggles a base URL in.
  for (const region of ['US', 'EU', 'eu ', ' us', 'us\u0000', 'eu1', 'apac', fakes.B.url, '', null, 1]) {
    const created = await create({ writeKey: nextKey(), region })
    t.equal(created.statusCode, 400, `region ${JSON.stringify(region)}`)
    t.equal(created.json().code, 'invalid_request')
  }

  // Nothing changed on the connections the PATCHes aimed at.
  for (const target of ['A', 'us'] as const) {
    const read = await app.inject({ method: 'GET', url: `/v1/connections/${before[target].id}`, headers: workspace.auth })
    t.same(read.json(), before[target], `connection ${target} unchanged`)
  }

  // Send through every connection that exists, then see who received which key.
  const list = (await app.inject({ method: 'GET', url: '/v1/connections', headers: workspace.auth })).json<{ connections: Array<{ id: string }> }>().connections
  t.equal(list.length, expected.size, 'only the legit and canonical connections were created')
  for (const { id } of list) {
    const sent = await app.inject({ method: 'POST', url: `/v1/connections/${id}/actions/track-event`, headers: workspace.auth, payload: { userId: 'u', event: 'e' } })
    t.equal(sent.statusCode, 200, `sent through ${id}`)
  }
  for (const [name, fake] of Object.entries(fakes)) {
    for (const request of fake.requests) {
      const key = keyOf(request.headers.authorization)
      t.equal(expected.get(key), name, `fake ${name} received the key of a connection meant for ${expected.get(key) ?? 'nobody'}`)
    }
  }
  t.equal(fakes.B.requests.length, 0, 'the other loopback port received nothing')
  t.equal(fakes.C.requests.length, 0)
  t.equal(fakes.A.requests.length, [...expected.values()].filter((v) => v === 'A').length)
  t.equal(fakes.us.requests.length, 1)
  t.equal(fakes.eu.requests.length, 1)
})

t.test('a hostname allowlist entry: case, dots, homographs and look-alikes', async (t) => {
  const { app, workspace, fakes } = await setup(t)
  const refuse = [
    'https://proxy.example.com.', 'https://proxy.example.com..', 'https://proxy.example.com.evil.test', 'https://PROXY.EXAMPLE.COM.evil.test',
    'https://evil.test/proxy.example.com', 'https://evil.test?proxy.example.com', 'https://evil.test#proxy.example.com',
    'https://proxy.example.com@evil.test', 'https://proxy.example.com%2eevil.test', 'https://proxy.example.com%40evil.test',
    'https://proxу.example.com', 'https://prοxy.example.com', 'https://ｐｒｏｘｙ.example.com', 'https://proxy。example。com',
    'https://proxy.example.com\u200b', 'https://pro\u00adxy.example.com', 'https://xn--proxy-ex.example.com', 'http://proxy.example.com',
    'https://proxy.example.com:8443', 'https://proxy.example.co', 'https://proxy.example.com\\@evil.test', 'https://proxy.example.com\t',
    'https://%70roxy.example.com', 'https://www.proxy.example.com', '//proxy.example.com', 'proxy.example.com', 'https:proxy.example.com'
  ]
  for (const endpoint of refuse) {
    const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'c', writeKey: 'wk_host', endpoint } })
    t.equal(created.statusCode, 400, JSON.stringify(endpoint))
    t.equal(created.json().code, 'endpoint_not_allowed', JSON.stringify(endpoint))
  }
  for (const endpoint of ['https://proxy.example.com', 'HTTPS://Proxy.Example.COM', 'https://proxy.example.com:443/', 'https://PROXY.example.com/']) {
    const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'c', writeKey: 'wk_host', endpoint } })
    t.equal(created.statusCode, 201, JSON.stringify(endpoint))
    t.equal(created.json().endpoint, 'https://proxy.example.com', 'stored as the canonical origin')
  }
  for (const fake of Object.values(fakes)) t.equal(fake.requests.length, 0, 'no traffic at all')
})

t.test('a redirect to a private address is not followed', async (t) => {
  const { app, workspace, fakes } = await setup(t, { SEGMENT_MAX_ATTEMPTS: '3' })
  const created = await app.inject({ method: 'POST', url: '/v1/connections', headers: workspace.auth, payload: { name: 'c', writeKey: 'wk_redirect_secret', endpoint: fakes.A.url } })
  const id = created.json().id
  for (const status of [301, 302, 303, 307, 308]) {
    fakes.A.respondWith([{ status, headers: { location: `${fakes.C.url}/v1/track` }, body: 'Found' }])
    const before = fakes.A.requests.length
    const sent = await app.inject({ method: 'POST', url: `/v1/connections/${id}/actions/track-event`, headers: workspace.auth, payload: { userId: 'u', event: 'e' } })
    t.equal(sent.statusCode, 502, `${status}`)
    t.match(sent.json(), { code: 'segment_rejected', upstreamStatus: status, attempts: 1 }, `${status}: a failure of the configured host, not retried`)
    t.equal(fakes.A.requests.length, before + 1)
  }
  // Redirects to the other allowed-looking places, and a relative one, for good measure.
  fakes.A.respondWith([
    { status: 302, headers: { location: `http://127.0.0.1:${port(fakes.C)}/` } },
    { status: 307, headers: { location: '/v1/track?again' } },
    { status: 302, headers: { location: `//127.0.0.1:${port(fakes.C)}/v1/track` } }
  ])
  for (let i = 0; i < 3; i++) {
    const sent = await app.inject({ method: 'POST', url: `/v1/connections/${id}/actions/track-event`, headers: workspace.auth, payload: { userId: 'u', event: 'e' } })
    t.equal(sent.statusCode, 502)
  }
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(fakes.C.requests.length, 0, 'the redirect target never received anything')
  t.notOk(fakes.A.requests.some((r) => r.url.includes('again')), 'not even a relative redirect is followed')
  for (const request of fakes.A.requests) t.equal(request.headers.authorization, `Basic ${basic('wk_redirect_secret')}`)
  for (const name of ['B', 'us', 'eu'] as const) t.equal(fakes[name].requests.length, 0, `fake ${name} received nothing`)
})
