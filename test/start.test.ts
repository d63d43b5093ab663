import t from 'tap'
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { signalGroup, startProcess, waitForOk, waitForStdout } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
// Only what a user's shell would have: no configuration at all.
const bareEnv = { PATH: process.env.PATH, HOME: process.env.HOME }

t.test('npm start on a fresh copy, with no environment, serves /healthz and keeps its key', async (t) => {
  const dir = t.testdir()
  // A fresh clone: the tracked files only (plus the installed node_modules, as after `npm ci`).
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' }).split('\0').filter(Boolean)
  for (const file of files) {
    mkdirSync(dirname(join(dir, file)), { recursive: true })
    cpSync(join(root, file), join(dir, file))
  }
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))

  const first = startProcess(t, 'npm', ['start', '--silent'], { cwd: dir, env: bareEnv })
  const health = await waitForOk('http://127.0.0.1:3000/healthz', first, 120_000)
  t.same(await health.json(), { status: 'ok' })
  const ready = await fetch('http://127.0.0.1:3000/readyz')
  t.equal(ready.status, 200)

  const keyFile = join(dir, 'data', 'encryption.key')
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'the generated key file is mode 0600')
  const key = readFileSync(keyFile, 'utf8')
  t.match(key, /^local-[0-9-]+:[A-Za-z0-9+/]{43}=\n$/)
  // Lines are written in batches, or soon after a quiet line (LOG_FLUSH_MS, 100 ms): a quiet
  // service still shows the line of its one request while it keeps running.
  await waitForStdout(first, '"route":"/readyz"')
  t.pass('a request\'s line reaches stdout while the service is quiet and running')
  t.equal(first.stdout().split('\n').filter((line) => line.includes('generated a local encryption key')).length, 1, 'warns once')

  // npm does not relay SIGTERM, so signal the group (as a container runtime's init would).
  signalGroup(first, 'SIGTERM')
  await first.exited

  const second = startProcess(t, process.execPath, ['dist/src/cli.js', 'serve'], { cwd: dir, env: bareEnv })
  await waitForOk('http://127.0.0.1:3000/readyz', second)
  t.equal(readFileSync(keyFile, 'utf8'), key, 'the next start reuses the key')
  t.notMatch(second.stdout(), /generated a local encryption key/, 'and does not warn again')
  second.child.kill('SIGTERM')
  t.equal(await second.exited, 0, 'SIGTERM exits 0')
})

t.test('a malformed ENCRYPTION_KEYS stops the start with one clear line', async (t) => {
  const proc = startProcess(t, process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
    cwd: root,
    env: { ...bareEnv, ENCRYPTION_KEYS: 'primary:not-base64!', DATABASE_URL: `sqlite:${join(t.testdir(), 'x.db')}` }
  })
  t.equal(await proc.exited, 1)
  t.equal(proc.stderr().trim(), 'segment-forwarder: configuration error: ENCRYPTION_KEYS: entry 1 is not kid:base64key (kid of letters, digits, \'.\', \'_\' or \'-\')')
  t.equal(proc.stdout(), '')
})
