// In-process CPU cost of a 450 KB batch: what the service does to a parsed body (schema validation
// in the ajv that Fastify builds with the app's options, then buildUpstream and render) against
// JSON's floor for the same body (JSON.parse + JSON.stringify). Both bodies are then measured with
// Buffer.byteLength, as undici does for content-length; the service's body is already UTF-8 bytes
// (build.ts encodes while it builds), the floor's is a string that still has to be measured (and,
// in a real forwarder, encoded: so the floor is, if anything, low). Iterations alternate the two,
// so noise from other processes falls on both alike. Run alone: `tsx bench/batch-floor.ts`.
import Fastify from 'fastify'
import { ajvOptions } from '../src/app.js'
import { buildUpstream } from '../src/segment/build.js'
import { BatchBody } from '../src/segment/schemas.js'
import { batchJson } from './scenarios.js'
import { median } from './stats.js'

export interface BatchFloorResult {
  bodyBytes: number
  iterations: number
  /** Median CPU milliseconds (user + system) of each step. */
  ms: { validate: number, build: number, render: number, service: number, parse: number, stringify: number, floor: number }
  /** Median over iterations of service / floor, each pair measured back to back. */
  ratio: number
}

export type Validate = (body: unknown) => boolean

/** A body validator for `schema`, compiled as Fastify compiles the service's route schemas. */
export async function bodyValidator (schema: object): Promise<Validate> {
  // The ajv options of buildApp: Fastify adds ajv-formats, then the service's own date-time.
  const app = Fastify({ ajv: ajvOptions })
  app.post('/route', { schema: { body: schema } }, async () => 'ok')
  await app.ready()
  // The compiler Fastify itself uses for route schemas, so the code ajv generates is the same.
  const compile = (app as unknown as { validatorCompiler: (route: object) => Validate }).validatorCompiler
  const validate = compile({ schema, method: 'POST', url: '/route', httpPart: 'body' })
  await app.close()
  return validate
}

const cpuMs = (since: NodeJS.CpuUsage): number => {
  const { user, system } = process.cpuUsage(since)
  return (user + system) / 1000
}

export async function batchFloor (iterations = 300, warmup = 60): Promise<BatchFloorResult> {
  const validate = await bodyValidator(BatchBody)
  const options = { workspaceId: 'wsp_bench', connectionId: 'con_bench', maxEventBytes: 32_000, maxBatchBytes: 500_000 }
  const steps = { validate: [] as number[], build: [] as number[], render: [] as number[], service: [] as number[], parse: [] as number[], stringify: [] as number[], floor: [] as number[] }
  const ratios: number[] = []
  let sink = 0

  for (let i = 0; i < warmup + iterations; i++) {
    // The service gets a freshly parsed body, as Fastify's parser hands it over (parse untimed).
    const body = JSON.parse(batchJson) as object

    let t = process.cpuUsage()
    if (!validate(body)) throw new Error('the bench batch does not validate')
    const validateMs = cpuMs(t)
    t = process.cpuUsage()
    const upstream = buildUpstream('batch-send', body, options)
    const buildMs = cpuMs(t)
    t = process.cpuUsage()
    sink += Buffer.byteLength(upstream.render(new Date()))
    const renderMs = cpuMs(t)

    t = process.cpuUsage()
    const parsed = JSON.parse(batchJson) as unknown
    const parseMs = cpuMs(t)
    t = process.cpuUsage()
    sink += Buffer.byteLength(JSON.stringify(parsed))
    const stringifyMs = cpuMs(t)

    if (i < warmup) continue
    const service = validateMs + buildMs + renderMs
    const floor = parseMs + stringifyMs
    steps.validate.push(validateMs)
    steps.build.push(buildMs)
    steps.render.push(renderMs)
    steps.service.push(service)
    steps.parse.push(parseMs)
    steps.stringify.push(stringifyMs)
    steps.floor.push(floor)
    if (floor > 0) ratios.push(service / floor)
  }
  if (sink === 0) throw new Error('unreachable')
  return {
    bodyBytes: Buffer.byteLength(batchJson),
    iterations,
    ms: {
      validate: median(steps.validate),
      build: median(steps.build),
      render: median(steps.render),
      service: median(steps.service),
      parse: median(steps.parse),
      stringify: median(steps.stringify),
      floor: median(steps.floor)
    },
    ratio: median(ratios)
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await batchFloor(Number(process.env.BENCH_FLOOR_ITERATIONS ?? 300)))
}
