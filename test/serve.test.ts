import t from 'tap'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { startProcess } from './support/process.js'

const cli = new URL('../src/cli.ts', import.meta.url).pathname
const tsx = new URL('../node_modules/.bin/tsx', import.meta.url).pathname

t.test('serve on a port already in use exits non-zero, saying why, without a shutdown', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const { port } = blocker.address() as AddressInfo

  const dir = t.testdir()
  const serve = startProcess(t, tsx, [cli, 'serve'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port), DATABASE_URL: `sqlite:${join(dir, 'db.sqlite')}` }
  })
  const code = await serve.exited
  t.not(code, 0, 'the exit code says the start failed')
  t.match(serve.stderr(), /EADDRINUSE/, 'stderr names the cause')
  t.match(serve.stdout(), /could not start listening/, 'the log says so')
  t.notMatch(serve.stdout(), /shutting down/, 'no shutdown is logged')
})
