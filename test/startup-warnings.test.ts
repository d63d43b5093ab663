import t from 'tap'
import { chmodSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { build, logCapture } from './helper.js'

const warnings = (lines: string[]): Array<Record<string, unknown>> =>
  lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.level === 40)

t.test('SHUTDOWN_GRACE_MS below the upstream deadline is logged as a warning at start', async (t) => {
  const { logs } = await build(t, { SHUTDOWN_GRACE_MS: '1000', SEGMENT_DEADLINE_MS: '15000' })
  t.match(warnings(logs), [{ msg: /SHUTDOWN_GRACE_MS \(1000\) is below SEGMENT_DEADLINE_MS \(15000\)/ }])
})

t.test('no warning with the defaults and a key file of mode 0600', async (t) => {
  const { logs } = await build(t)
  t.same(warnings(logs).filter((line) => !String(line.msg).includes('generated a local encryption key')), [])
})

t.test('a key file that others can read is a warning naming the file and its mode', async (t) => {
  const dir = t.testdir()
  const keyFile = join(dir, 'encryption.key')
  writeFileSync(keyFile, `local:${randomBytes(32).toString('base64')}\n`)
  chmodSync(keyFile, 0o644)
  const capture = logCapture()
  const app = await buildApp(loadConfig({ DATABASE_URL: `sqlite:${join(dir, 'db.sqlite')}`, LOG_LEVEL: 'info' }), { logStream: capture.stream })
  t.teardown(async () => { await app.close() })
  t.match(warnings(capture.lines), [{ msg: /can be read by other users/, file: keyFile, mode: '0644' }])
  t.notMatch(capture.lines.join('\n'), /local:[A-Za-z0-9+/]{20}/, 'the key itself is not logged')
})
