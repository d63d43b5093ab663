// openapi.yaml as its users' tools see it: openapi-typescript generates a typed client that keeps
// the request rules, Redocly's recommended rules find no error, and Prism mocks from it. All three
// are devDependencies and run offline.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import openapiTS, { astToString } from 'openapi-typescript'
import ts from 'typescript'
import { freePort } from './support/free-port.js'

const documentUrl = new URL('../openapi.yaml', import.meta.url)
const bin = (name: string): string => new URL(`../node_modules/.bin/${name}`, import.meta.url).pathname
const offline = { ...process.env, REDOCLY_TELEMETRY: 'off', NO_UPDATE_NOTIFIER: '1' }

// A small typed client over the generated `paths`: the body type of each action comes from the document.
const client = `
import type { paths } from './api.js'
type Action = 'track-event' | 'identify-user' | 'group-user' | 'page-view' | 'alias-user' | 'batch-send'
type BodyOf<A extends Action> = paths[\`/v1/connections/{connectionId}/actions/\${A}\`]['post']['requestBody']['content']['application/json']
type AnswerOf<A extends Action> = paths[\`/v1/connections/{connectionId}/actions/\${A}\`]['post']['responses'][200]['content']['application/json']
export async function send<A extends Action> (base: string, token: string, connectionId: string, action: A, body: BodyOf<A>): Promise<AnswerOf<A>> {
  const response = await fetch(\`\${base}/v1/connections/\${connectionId}/actions/\${action}\`, {
    method: 'POST', headers: { authorization: \`Bearer \${token}\`, 'content-type': 'application/json' }, body: JSON.stringify(body)
  })
  return await response.json() as AnswerOf<A>
}
`

const valid = `
import { send } from './client.js'
export async function calls (): Promise<void> {
  const at = ['http://127.0.0.1:3000', 'sfw_x', 'con_1'] as const
  await send(...at, 'track-event', { userId: 'u1', event: 'Order Completed', properties: { revenue: 12.5, items: [1, 2] }, context: { ip: '203.0.113.7' } })
  await send(...at, 'track-event', { anonymousId: 'a1', event: 'Signed Up', integrations: { All: false } })
  await send(...at, 'identify-user', { userId: 'u1', traits: { email: 'a@example.com', plan: 'pro' } })
  await send(...at, 'group-user', { anonymousId: 'a1', groupId: 'g1', traits: { employees: 120 } })
  await send(...at, 'page-view', { userId: 'u1', name: 'Pricing', properties: { path: '/pricing' } })
  await send(...at, 'alias-user', { previousId: 'a1', userId: 'u1' })
  const answer = await send(...at, 'batch-send', {
    batch: [{ type: 'track', userId: 'u1', event: 'E', properties: { n: 1 } }, { type: 'screen', anonymousId: 'a1', name: 'Home' }],
    context: { library: { name: 'taskjuice', version: '1' } },
    integrations: { All: true }
  })
  const ids: string[] = answer.messageIds
  const id: string = (await send(...at, 'track-event', { userId: 'u1', event: 'E' })).messageId
  void ids; void id
}
`

// Each must fail to compile, and the diagnostic must name what is wrong.
const invalid: Array<[string, string, RegExp]> = [
  ['a track without event', 'send(...at, \'track-event\', { userId: \'u1\' })', /event/],
  ['a track with neither userId nor anonymousId', 'send(...at, \'track-event\', { event: \'E\' })', /userId|anonymousId/],
  ['an identify with neither userId nor anonymousId', 'send(...at, \'identify-user\', { traits: { plan: \'pro\' } })', /userId|anonymousId/],
  ['a group without groupId', 'send(...at, \'group-user\', { userId: \'u1\' })', /groupId/],
  ['an alias without previousId', 'send(...at, \'alias-user\', { userId: \'u1\' })', /previousId/],
  ['a track whose properties is not an object', 'send(...at, \'track-event\', { userId: \'u1\', event: \'E\', properties: \'x\' })', /properties|string/],
  ['a batch item of an unknown type', 'send(...at, \'batch-send\', { batch: [{ type: \'click\', userId: \'u1\' }] })', /type|click/]
]
// Not checked: a `writeKey` in the body. The document forbids it (`not: {}`), which openapi-typescript
// types as `unknown`; the service refuses it at run time (actions-validation).

function diagnostics (dir: string, file: string): string[] {
  const program = ts.createProgram([join(dir, file)], {
    strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'], types: []
  })
  return ts.getPreEmitDiagnostics(program).map((d) => `${d.file?.fileName.slice(dir.length + 1) ?? ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`)
}

t.test('openapi-typescript: a typed client compiles valid bodies and refuses invalid ones', async (t) => {
  const dir = t.testdir({ 'package.json': JSON.stringify({ type: 'module' }) })
  writeFileSync(join(dir, 'api.ts'), astToString(await openapiTS(documentUrl)))
  writeFileSync(join(dir, 'client.ts'), client)
  writeFileSync(join(dir, 'valid.ts'), valid)
  t.same(diagnostics(dir, 'valid.ts'), [], 'the client and every valid body type-check')

  for (const [label, call, expected] of invalid) {
    const file = `invalid-${invalid.findIndex(([l]) => l === label)}.ts`
    writeFileSync(join(dir, file), `import { send } from './client.js'\nconst at = ['http://127.0.0.1:3000', 'sfw_x', 'con_1'] as const\nexport const call = async (): Promise<unknown> => await ${call}\n`)
    const found = diagnostics(dir, file)
    t.ok(found.length > 0 && found.every((d) => d.startsWith(`${file}:`)), `${label} does not compile`)
    t.match(found.join('\n'), expected, `${label}: the error names it`)
  }
})

t.test('redocly lint (recommended rules) finds no error', async (t) => {
  const { stdout } = await promisify(execFile)(bin('redocly'), ['lint', documentUrl.pathname, '--extends=recommended', '--format=json'], { env: offline, maxBuffer: 16 * 1024 * 1024 })
    .catch((error: { stdout: string }) => ({ stdout: error.stdout }))
  const report = JSON.parse(stdout) as { totals: { errors: number }, problems: Array<{ ruleId: string, severity: string, message: string }> }
  t.same(report.problems.filter((p) => p.severity === 'error'), [], 'no errors')
  t.equal(report.totals.errors, 0)
})

t.test('prism mock loads the document and validates requests against it', async (t) => {
  const port = await freePort()
  const prism = spawn(bin('prism'), ['mock', documentUrl.pathname, '--port', String(port), '--host', '127.0.0.1', '--errors'], { env: offline, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { prism.kill('SIGKILL') })
  let output = ''
  const listening = new Promise<void>((resolve, reject) => {
    const read = (chunk: Buffer): void => {
      output += chunk.toString('utf8')
      if (output.includes('Prism is listening')) resolve()
    }
    prism.stdout.on('data', read)
    prism.stderr.on('data', read)
    once(prism, 'exit').then(([code]) => { reject(new Error(`prism exited ${String(code)}:\n${output}`)) })
  })
  await listening
  t.notMatch(output, /error/i, 'no errors while loading')

  const url = `http://127.0.0.1:${port}/v1/connections/con_1/actions/track-event`
  const headers = { authorization: 'Bearer sfw_x', 'content-type': 'application/json' }
  const ok = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ userId: 'u1', event: 'E', context: { ip: '203.0.113.7' } }) })
  t.equal(ok.status, 200, 'a valid track is answered from the document')
  t.match(await ok.json(), { status: String, messageId: String })
  const bad = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ userId: 'u1' }) })
  // Prism answers a request its schema refuses with the operation's own 422 when it documents one
  // (track-event does: idempotency_key_reused), else with its 400.
  t.equal(bad.status, 422, 'a track without event is refused by the document\'s schema')
  t.match(await bad.text(), /event/, 'naming the missing event')
})
