import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { serviceName, serviceVersion } from '../version.js'

// The document is generated from the route schemas that also validate requests, so the two
// cannot drift; openapi.yaml at the repository root is this document, checked by a test.
export default fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: serviceName,
        version: serviceVersion,
        description: 'Forwards TaskJuice workflow events into clients\' Segment sources through Segment\'s HTTP Tracking API. ' +
          'An "accepted" answer means Segment took the payload, not that downstream destinations processed it. ' +
          'Errors are application/problem+json (RFC 9457) with a stable `code`.'
      },
      // The default listen address (HOST, PORT); a deployment serves the same paths at its own.
      servers: [{ url: 'http://127.0.0.1:3000', description: 'The default HOST and PORT; replace with the address of your deployment' }],
      tags: [
        { name: 'actions', description: 'Send events to a connection\'s Segment source' },
        { name: 'connections', description: 'A workspace\'s Segment sources and their encrypted Write Keys' },
        { name: 'admin', description: 'Workspaces and API tokens (ADMIN_TOKEN; absent when unset)' },
        { name: 'operations', description: 'Health, readiness, metrics and this document' }
      ],
      components: {
        securitySchemes: {
          workspaceToken: { type: 'http', scheme: 'bearer', description: 'A workspace API token (sfw_…)' },
          adminToken: { type: 'http', scheme: 'bearer', description: 'The operator\'s ADMIN_TOKEN' }
        }
      }
    },
    // Shared schemas keep their $id as their component name (Problem), not def-N.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}`
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  app.get('/openapi.json', {
    schema: { tags: ['operations'], summary: 'This OpenAPI document', hide: true }
  }, async () => app.swagger())
}, { name: 'openapi' })
