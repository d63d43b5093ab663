import t from 'tap'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

// Node 20 loads an ES module through require() (require(esm)) only from 20.19 on, unflagged.
const REQUIRE_ESM_SINCE = [20, 19] as const

/** [major, minor] of a `>=X.Y[.Z]` range, the only form engines uses here. */
function lowerBound (range: string): [number, number] {
  const match = /^>=\s*(\d+)\.(\d+)(\.\d+)?$/.exec(range.trim())
  if (match === null) throw new Error(`engines "${range}" is not of the form >=X.Y`)
  return [Number(match[1]), Number(match[2])]
}
const atLeast = ([major, minor]: readonly [number, number], [wantMajor, wantMinor]: readonly [number, number]): boolean =>
  major > wantMajor || (major === wantMajor && minor >= wantMinor)
const require = createRequire(import.meta.url)
const readJson = (path: string): Record<string, unknown> => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>

/** The package.json of the package a resolved entry file belongs to (its exports may hide package.json). */
function packageJsonOf (entry: string): string {
  let dir = dirname(entry)
  while (!dir.endsWith('/node_modules/cookie') && dir !== dirname(dir)) dir = dirname(dir)
  return join(dir, 'package.json')
}

t.test('engines admits no Node that cannot load the dependencies the service runs with', async (t) => {
  const engines = (readJson(new URL('../package.json', import.meta.url).pathname).engines as { node: string }).node
  // fastify -> light-my-request (CommonJS) require()s cookie, which is ES modules only.
  const lightMyRequest = require.resolve('light-my-request', { paths: [require.resolve('fastify')] })
  const cookie = readJson(packageJsonOf(createRequire(lightMyRequest).resolve('cookie')))
  t.equal(cookie.type, 'module', 'cookie is ES modules only, so light-my-request needs require(esm)')
  t.ok(atLeast(lowerBound(engines), REQUIRE_ESM_SINCE), `engines "${engines}" starts at ${REQUIRE_ESM_SINCE.join('.')} or later`)
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number]
  t.ok(atLeast([major, minor], lowerBound(engines)), 'the Node running the tests is in the range')
})
