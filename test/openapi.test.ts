import t from 'tap'
import { readFileSync } from 'node:fs'
import { validate } from '@readme/openapi-parser'
import { parse } from 'yaml'
import { build } from './helper.js'

const committed = parse(readFileSync(new URL('../openapi.yaml', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, { summary?: string, tags?: string[], responses: Record<string, unknown>, security?: unknown[], requestBody?: { content: Record<string, { example?: unknown, examples?: unknown, schema?: { examples?: unknown } }> } }>>
}

/** Every method and path the app registered, from Fastify's own route tree. */
function registeredRoutes (tree: string): string[] {
  const routes: string[] = []
  const stack: string[] = []
  for (const line of tree.split('\n')) {
    const match = /^((?:[│ ] {3})*)[├└]── (\S+) \(([^)]+)\)/.exec(line)
    if (match === null) continue
    const depth = match[1]!.length / 4
    stack.length = depth
    const path = (stack[depth - 1] ?? '') + match[2]!
    stack.push(path)
    for (const method of match[3]!.split(', ')) routes.push(`${method} ${path}`)
  }
  return routes
}

t.test('openapi.yaml is exactly what the app serves (run `npm run openapi` after changing a schema)', async (t) => {
  const { app } = await build(t)
  const served = await app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(served.statusCode, 200)
  t.same(served.json(), committed)
})

t.test('the document is valid OpenAPI 3', async (t) => {
  const result = await validate(structuredClone(committed) as never)
  t.same(result, { valid: true, warnings: [], specification: 'OpenAPI' })
})

t.test('the document covers every route the app registers, each fully described', async (t) => {
  const { app } = await build(t)
  await app.ready()
  const documentedOrInternal = (route: string): boolean => {
    const [method, path] = route.split(' ') as [string, string]
    if (method === 'HEAD' || path.startsWith('/docs') || path === '/openapi.json') return true
    const openapiPath = path.replace(/:(\w+)/g, '{$1}')
    return committed.paths[openapiPath]?.[method.toLowerCase()] !== undefined
  }
  const routes = registeredRoutes(app.printRoutes({ commonPrefix: false }))
  t.ok(routes.length > 20, `${routes.length} routes found`)
  t.same(routes.filter((route) => !documentedOrInternal(route)), [], 'every registered route is documented')

  for (const [path, methods] of Object.entries(committed.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const name = `${method.toUpperCase()} ${path}`
      t.ok(app.hasRoute({ method: method.toUpperCase() as 'GET', url: path.replace(/\{(\w+)\}/g, ':$1') }), `${name} is served`)
      t.ok(operation.summary, `${name} has a summary`)
      t.ok(operation.tags?.length, `${name} has a tag`)
      if (path.startsWith('/v1/')) {
        t.ok(operation.security?.length, `${name} names its bearer security scheme`)
        t.ok(operation.responses['401'], `${name} documents 401`)
      }
      const body = operation.requestBody?.content['application/json']
      if (body !== undefined) t.ok(body.example ?? body.examples ?? body.schema?.examples, `${name} has request examples`)
      for (const [status, response] of Object.entries(operation.responses as Record<string, { content?: Record<string, { example?: unknown, examples?: unknown, schema?: { examples?: unknown, $ref?: string } }> }>)) {
        if (!status.startsWith('2') || response.content === undefined) continue
        const media = Object.values(response.content)[0]!
        t.ok(media.example ?? media.examples ?? media.schema?.examples, `${name} ${status} has a response example`)
      }
    }
  }
})

t.test('action operations name the limits and what "accepted" means, and every error status', async (t) => {
  for (const action of ['track-event', 'identify-user', 'group-user', 'page-view', 'alias-user', 'batch-send']) {
    const operation = committed.paths[`/v1/connections/{connectionId}/actions/${action}`]?.post as unknown as { description: string, responses: Record<string, unknown> }
    t.match(operation.description, /not that downstream destinations processed it/, action)
    t.match(operation.description, /32000/, action)
    t.same(Object.keys(operation.responses).sort(), ['200', '202', '400', '401', '404', '409', '413', '415', '422', '429', '502', '503', '504'], action)
  }
})

t.test('Swagger UI is served at /docs', async (t) => {
  const { app } = await build(t)
  const page = await app.inject({ method: 'GET', url: '/docs/' })
  t.equal(page.statusCode, 200)
  t.match(page.body, /swagger-ui/i)
})
