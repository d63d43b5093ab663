// Shared by the suites that try to break the service: fuzz, ssrf, secret-leaks, tenant-isolation.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { LightMyRequestResponse } from 'fastify'
import { errorTable } from '../../src/errors.js'

/**
 * Load shedding has its own tests. These suites feed the app deliberately slow bodies on a busy
 * machine, and an event-loop stall must not turn their answers into 503 overloaded.
 */
export const STEADY_ENV = { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' } as const

/** FUZZ_SEED from the environment (to replay a failure), else a fresh random seed. */
export function fuzzSeed (): number {
  const given = process.env.FUZZ_SEED
  if (given !== undefined && given !== '') {
    const seed = Number(given)
    if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED must be an integer (got "${given}")`)
    return seed
  }
  return Math.floor(Math.random() * 0x7fffffff)
}

/** FUZZ_RUNS scales every run count (1 = the default budget of the suite). */
export function fuzzRuns (base: number): number {
  const factor = Number(process.env.FUZZ_RUNS ?? '1')
  return Math.max(1, Math.round(base * (Number.isFinite(factor) && factor > 0 ? factor : 1)))
}

/**
 * What is wrong with an error answer, or undefined when it is a proper RFC 9457 problem document:
 * never a 5xx here, `application/problem+json`, and {status, code, title, detail} that agree with
 * the HTTP status and the error table. 2xx and 3xx answers are the caller's to judge.
 */
export function problemViolation (response: LightMyRequestResponse, method = 'GET'): string | undefined {
  const status = response.statusCode
  if (status >= 500) return `answered ${status}: ${response.body.slice(0, 300)}`
  if (status < 400) return undefined
  const type = String(response.headers['content-type'] ?? '')
  if (!/^application\/problem\+json(;|$)/.test(type)) return `${status} with content-type "${type}": ${response.body.slice(0, 300)}`
  if (method === 'HEAD') return response.body === '' ? undefined : 'a HEAD answer has a body'
  let body: Record<string, unknown>
  try {
    body = JSON.parse(response.body) as Record<string, unknown>
  } catch {
    return `${status} body is not JSON: ${response.body.slice(0, 300)}`
  }
  if (body.status !== status) return `body.status ${String(body.status)} differs from HTTP ${status}`
  const entry = errorTable[body.code as keyof typeof errorTable] as { status: number, title: string } | undefined
  if (entry === undefined) return `unknown code ${String(body.code)}`
  if (entry.status !== status) return `code ${String(body.code)} belongs to ${entry.status}, answered ${status}`
  if (body.title !== entry.title) return `title ${String(body.title)} is not the title of ${String(body.code)}`
  if (typeof body.detail !== 'string' || body.detail === '') return 'detail is missing'
  return undefined
}

/** Every file under `dir`, recursively, as raw bytes. */
export function readTree (dir: string): Array<{ path: string, bytes: Buffer }> {
  const files: Array<{ path: string, bytes: Buffer }> = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) files.push(...readTree(path))
    else if (entry.isFile()) files.push({ path, bytes: readFileSync(path) })
  }
  return files
}

export const basic = (writeKey: string): string => Buffer.from(writeKey + ':').toString('base64')

/** The spellings a secret can leak in: itself, and base64 of it with and without the Basic colon. */
export function secretForms (name: string, secret: string): Array<{ label: string, text: string }> {
  return [
    { label: name, text: secret },
    { label: `base64(${name} + ':')`, text: basic(secret) },
    { label: `base64(${name})`, text: Buffer.from(secret).toString('base64') }
  ]
}

/** Labels of the forms found in `haystack`: text as is; bytes as UTF-8 and as UTF-16LE. */
export function findSecrets (haystack: string | Buffer, forms: Array<{ label: string, text: string }>): string[] {
  const found: string[] = []
  for (const { label, text } of forms) {
    if (typeof haystack === 'string') {
      if (haystack.includes(text)) found.push(label)
    } else {
      if (haystack.includes(Buffer.from(text, 'utf8'))) found.push(`${label} (utf8)`)
      if (haystack.includes(Buffer.from(text, 'utf16le'))) found.push(`${label} (utf16le)`)
    }
  }
  return found
}

/** Every `length`-character slice of a secret: a cut secret leaks its pieces, not itself. */
export function slicesOf (name: string, secret: string, length: number): Array<{ label: string, text: string }> {
  const slices: Array<{ label: string, text: string }> = []
  for (let start = 0; start + length <= secret.length; start++) {
    slices.push({ label: `${name}[${start}..${start + length})`, text: secret.slice(start, start + length) })
  }
  return slices
}
