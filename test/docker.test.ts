// No container engine runs where these tests run, so this file checks the Dockerfile's text and
// then REPLAYS what the image does: the build stage's RUN steps on a copy of the build context,
// the runtime stage's COPY --from=build, then ENTRYPOINT and CMD with the image's ENV, the
// HEALTHCHECK command and SIGTERM. What it cannot replay (apt-get, USER, VOLUME ownership) it
// checks in the text. The replay runs on the Node that runs the tests (.ci/run runs the suite on
// the image's Node major too) and says when that is not the image's.
//
// `npm ci` from the registry takes minutes and needs the network, so by default the replay reuses
// the installed tree (the lockfile's, as npm ci made it) and runs the rest offline;
// TEST_IMAGE_NPM_CI=1 (set by .ci/run) runs the real `npm ci` as the image build does.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './support/free-port.js'
import { startProcess, waitForOk } from './support/process.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

const realNpmCi = process.env.TEST_IMAGE_NPM_CI === '1'
// A real `npm ci` compiles SQLite where no prebuilt better-sqlite3 binary can be fetched, which
// takes minutes on a small machine: this extends tap's per-file limit.
if (realNpmCi) t.setTimeout(30 * 60_000)

interface Instruction {
  keyword: string
  args: string
  stage: number
}

interface Stage {
  image: string
  name: string | undefined
  instructions: Instruction[]
}

/** Splits a Dockerfile into stages of instructions (continuations joined, comments dropped). */
function parseDockerfile (text: string): { args: Record<string, string>, stages: Stage[] } {
  const logical: string[] = []
  let pending = ''
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue
    if (pending === '' && line.trim() === '') continue
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `
      continue
    }
    logical.push((pending + line).trim())
    pending = ''
  }
  const args: Record<string, string> = {}
  const stages: Stage[] = []
  for (const line of logical) {
    const [, keyword = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    const upper = keyword.toUpperCase()
    if (upper === 'FROM') {
      const [, image = '', name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest) ?? []
      stages.push({ image: image.replace(/\$\{(\w+)\}/g, (_m, arg: string) => args[arg] ?? ''), name, instructions: [] })
    } else if (upper === 'ARG' && stages.length === 0) {
      const [name = '', value = ''] = rest.split('=')
      args[name] = value
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push({ keyword: upper, args: rest, stage: stages.length - 1 })
    }
  }
  return { args, stages }
}

const all = (stage: Stage, keyword: string): string[] => stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args)
const one = (stage: Stage, keyword: string): string => {
  const found = all(stage, keyword)
  if (found.length !== 1) throw new Error(`expected one ${keyword} in stage ${stage.name ?? stage.image}, found ${found.length}`)
  return found[0]!
}
/** `ENV A=1 B=2` lines of a stage, as an object (unquoted values, as this Dockerfile uses). */
const envOf = (stage: Stage): Record<string, string> => Object.fromEntries(all(stage, 'ENV').flatMap((line) =>
  line.split(/\s+/).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)])))
/** RUN's shell command without BuildKit flags (`--mount=…`). */
const runCommand = (args: string): string => args.replace(/^(--\S+\s+)+/, '')
/** The argv of `HEALTHCHECK [--options] CMD ["…", …]`. */
const healthcheckArgv = (args: string): string[] => JSON.parse(args.replace(/^(--\S+\s+)*CMD\s+/, '')) as string[]

const dockerfile = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8'))
const [build, runtime] = dockerfile.stages as [Stage, Stage]

t.test('the Dockerfile builds in one stage and runs unprivileged, without a toolchain, in another', async (t) => {
  t.equal(dockerfile.stages.length, 2, 'two stages')
  t.equal(build.name, 'build', 'FROM … AS build')
  for (const stage of dockerfile.stages) t.match(stage.image, /^node:(20|22)-bookworm-slim$/, `${stage.name ?? 'final'} stage on an LTS slim image`)
  t.equal(build.image, runtime.image, 'both stages on the same Node, so the native addon matches')
  t.equal(one(build, 'WORKDIR'), '/app')
  t.equal(one(runtime, 'WORKDIR'), '/app', 'CMD\'s relative path is from /app')

  const buildRuns = all(build, 'RUN').map(runCommand).join('\n')
  t.match(buildRuns, /apt-get install[^\n]*\bpython3\b[^\n]*\bmake\b[^\n]*\bg\+\+/, 'the build stage has node-gyp\'s toolchain')
  t.match(buildRuns, /^npm ci$/m, 'npm ci from the lockfile')
  t.match(buildRuns, /npm run build/, 'compiles TypeScript')
  t.match(buildRuns, /npm prune --omit=dev/, 'then drops devDependencies')

  const runtimeRuns = all(runtime, 'RUN').join('\n')
  t.notMatch(runtimeRuns, /\b(python3|make|g\+\+|build-essential)\b/, 'no toolchain in the runtime stage')
  t.notMatch(runtimeRuns, /npm (ci|install)/, 'and no install there: it gets the pruned node_modules')
  const instructions = dockerfile.stages.flatMap((stage) => stage.instructions.map((i) => `${i.keyword} ${i.args}`)).join('\n')
  t.notMatch(instructions, /\bcurl\b|\bwget\b/, 'no curl or wget')

  t.same(envOf(runtime), { NODE_ENV: 'production', HOST: '0.0.0.0', PORT: '3000', DATABASE_URL: 'sqlite:/data/segment-forwarder.db' })
  t.equal(one(runtime, 'USER'), 'node', 'USER node')
  t.equal(one(runtime, 'VOLUME'), '/data')
  t.match(runtimeRuns, /chown node:node \/data/, '/data belongs to node')
  t.equal(one(runtime, 'EXPOSE'), '3000')
  t.equal(healthcheckArgv(one(runtime, 'HEALTHCHECK'))[0], 'node', 'HEALTHCHECK runs node')
  t.same(JSON.parse(one(runtime, 'ENTRYPOINT')), ['tini', '--'], 'tini forwards signals as PID 1')
  t.match(runtimeRuns, /apt-get install[^\n]*\btini\b/, 'tini comes from apt')
  t.same(JSON.parse(one(runtime, 'CMD')), ['node', 'dist/src/cli.js', 'serve'], 'CMD ["node", "dist/src/cli.js", "serve"]')
  t.same(all(runtime, 'COPY').map((args) => args.split(/\s+/).at(-1)).sort(), ['./dist', './node_modules', './package.json'], 'copies only dist, node_modules and package.json')

  const ignored = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((line) => line.trim())
  for (const entry of ['.git', 'node_modules', 'dist', 'data', 'coverage', '.tap', '**/*.db*', '.env', 'bench/results']) {
    t.ok(ignored.includes(entry), `.dockerignore lists ${entry}`)
  }
})

/** Whether a command is on PATH. */
function onPath (command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, command)))
}

const imageNodeMajor = /^node:(\d+)-/.exec(build.image)?.[1]
const testNodeMajor = process.versions.node.split('.')[0]
const nodeNote = testNodeMajor === imageNodeMajor ? `Node ${process.version}, the image's major` : `Node ${process.version}, not the image's Node ${imageNodeMajor ?? '?'}`
const tini = onPath('tini')

t.test(`replay on ${nodeNote}: ${realNpmCi ? 'npm ci' : 'the installed tree'}, build, prune; the pruned tree serves as ENTRYPOINT and CMD do${tini ? ' under tini' : ''}, passes HEALTHCHECK and stops on SIGTERM`, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'segment-forwarder-image-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  // Outside the repository on purpose: Node must not find /work/…/node_modules by walking up.
  const context = join(work, 'context')
  const app = join(work, 'build')
  const image = join(work, 'runtime')
  const data = join(work, 'data')
  for (const dir of [context, app, image, data]) mkdirSync(dir)

  // The build context: the tracked tree, as a fresh clone would have it.
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' }).split('\0').filter(Boolean)
  for (const file of files) {
    if (!existsSync(join(root, file))) continue // deleted but not yet staged
    mkdirSync(dirname(join(context, file)), { recursive: true })
    cpSync(join(root, file), join(context, file))
  }

  // Only what a fresh machine would have: npm's own settings come from HOME, not from a parent npm.
  // Plus the build stage's own ENV (JOBS=max: node-gyp compiles on every core). Without the real
  // npm ci, npm stays offline: nothing of the replay may need the network.
  // The headers node-gyp builds against stay those of the Node that runs (as the image's are its own).
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...(process.env.npm_config_nodedir === undefined ? {} : { npm_config_nodedir: process.env.npm_config_nodedir }),
    // And the machine's extra CA certificates, which Node itself reads (Node 22's npm does not get
    // past a TLS-inspecting egress without them, whatever npmrc's cafile says).
    ...(process.env.NODE_EXTRA_CA_CERTS === undefined ? {} : { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS }),
    ...envOf(build),
    ...(realNpmCi ? {} : { npm_config_offline: 'true' })
  }
  if (realNpmCi) {
    const ping = await run('npm', ['ping'], { cwd: work, env, timeout: 60_000 })
    if (ping.code !== 0) {
      t.fail(`TEST_IMAGE_NPM_CI=1 but the npm registry is unreachable (npm ping exited ${ping.code}):\n${ping.output}`)
      return
    }
  }

  for (const instruction of build.instructions) {
    if (instruction.keyword === 'COPY') {
      const [sources, dest] = [instruction.args.split(/\s+/).slice(0, -1), instruction.args.split(/\s+/).at(-1)!]
      for (const source of sources) {
        const target = dest.endsWith('/') ? join(app, dest, posix.basename(source)) : join(app, dest)
        cpSync(join(context, source), target, { recursive: true })
      }
    } else if (instruction.keyword === 'RUN') {
      const command = runCommand(instruction.args)
      if (command.startsWith('apt-get')) {
        t.comment(`skipped (system packages): ${command}`)
        continue
      }
      if (command === 'npm ci' && !realNpmCi) {
        // The tree npm ci made for this checkout, linked file by file (prune below unlinks, never
        // writes through): the same packages, no registry.
        const linked = await run('cp', ['-al', join(root, 'node_modules'), join(app, 'node_modules')], { cwd: work, env, timeout: 120_000 })
        if (linked.code !== 0) cpSync(join(root, 'node_modules'), join(app, 'node_modules'), { recursive: true, verbatimSymlinks: true })
        t.comment('RUN npm ci: replaced by the installed tree (TEST_IMAGE_NPM_CI=1 runs it for real)')
        continue
      }
      const started = Date.now()
      const result = await run('sh', ['-c', command], { cwd: app, env, timeout: 25 * 60_000 })
      t.comment(`RUN ${command}: ${((Date.now() - started) / 1000).toFixed(1)} s`)
      if (result.code !== 0) {
        t.fail(`RUN ${command} exited ${result.code}:\n${result.output.slice(-4000)}`)
        return
      }
      if (/\bnpm ci\b/.test(command)) {
        t.notMatch(result.output, /not yet covered by allowScripts/, 'every install script npm ci runs is approved in package.json')
        t.ok(existsSync(join(app, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')), 'npm ci built better-sqlite3')
      }
    }
  }

  const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string>, devDependencies: Record<string, string> }
  for (const name of Object.keys(pkg.devDependencies)) t.notOk(existsSync(join(app, 'node_modules', name)), `pruned: ${name}`)
  for (const name of Object.keys(pkg.dependencies)) t.ok(existsSync(join(app, 'node_modules', name)), `kept: ${name}`)

  // The runtime stage: its COPY --from=build lines, from the build stage's /app into ours.
  for (const args of all(runtime, 'COPY')) {
    const [, source = '', dest = ''] = /^--from=build\s+(?:--\S+\s+)*(\S+)\s+(\S+)$/.exec(args) ?? []
    t.ok(source.startsWith('/app/'), `COPY ${args} comes from the build stage's /app`)
    cpSync(join(app, source.slice('/app/'.length)), join(image, dest), { recursive: true, verbatimSymlinks: true })
  }

  const port = await freePort()
  const containerEnv: NodeJS.ProcessEnv = {
    ...envOf(runtime),
    PORT: String(port),
    DATABASE_URL: envOf(runtime).DATABASE_URL!.replace('/data/', `${data}/`),
    PATH: process.env.PATH,
    HOME: process.env.HOME
  }
  // ENTRYPOINT then CMD, as the container runtime joins them; without tini here, CMD alone.
  const entrypoint = JSON.parse(one(runtime, 'ENTRYPOINT')) as string[]
  const cmd = JSON.parse(one(runtime, 'CMD')) as string[]
  if (!tini) t.comment('tini is not installed here: CMD runs without its ENTRYPOINT, and SIGTERM goes to node directly')
  const [command = '', ...args] = tini ? [...entrypoint, ...cmd] : cmd
  // In the container tini is PID 1; here it is not, so it registers as the subreaper instead (as
  // its own warning asks), which is what PID 1 gives it: orphans are reaped and it stays quiet.
  const proc = startProcess(t, command, args, { cwd: image, env: tini ? { ...containerEnv, TINI_SUBREAPER: '1' } : containerEnv })
  const health = await waitForOk(`http://127.0.0.1:${port}/healthz`, proc)
  t.same(await health.json(), { status: 'ok' }, '/healthz 200')
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200, '/readyz 200: SQLite (the native addon) and the key ring work')
  t.ok(existsSync(join(data, 'segment-forwarder.db')), 'the database is in the volume')
  t.ok(existsSync(join(data, 'encryption.key')), 'and so is the generated key')

  const [probe = '', ...probeArgs] = healthcheckArgv(one(runtime, 'HEALTHCHECK'))
  const healthy = await run(probe, probeArgs, { cwd: image, env: containerEnv, timeout: 30_000 })
  t.equal(healthy.code, 0, `the HEALTHCHECK command passes against the running service ${healthy.output}`)
  const unhealthy = await run(probe, probeArgs, { cwd: image, env: { ...containerEnv, PORT: String(await freePort()) }, timeout: 30_000 })
  t.not(unhealthy.code, 0, 'and fails when nothing answers')

  // The runtime signals the container's first process only: tini, which forwards it to node.
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0, tini ? 'SIGTERM to tini: node drains and tini exits 0' : 'SIGTERM exits 0')
  t.match(proc.stdout(), /shutting down: draining in-flight requests/)
  t.equal(proc.stderr(), '', 'nothing on stderr')
})

/** Runs a command to completion; never rejects. */
async function run (command: string, args: string[], options: { cwd: string, env: NodeJS.ProcessEnv, timeout: number }): Promise<{ code: number | null, output: string }> {
  return await new Promise((resolve) => {
    execFile(command, args, { ...options, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null
      resolve({ code, output: `${stdout}${stderr}${error !== null && code === null ? String(error) : ''}` })
    })
  })
}
