import { Type, type Static } from '@sinclair/typebox'
import { StringEnum } from './schema-helpers.js'

// A connection's request and answer shapes: one definition for validation, the OpenAPI document
// and the TypeScript types (Static<>) the domain code uses.

// Printable ASCII without spaces or ':' (the Basic username cannot hold a colon).
export const WriteKey = Type.String({
  minLength: 1,
  maxLength: 256,
  pattern: '^[!-9;-~]+$',
  description: 'The source\'s Write Key. Stored encrypted; never returned or logged.',
  examples: ['9f8e7d6c5b4a39281706f5e4d3c2b1a0']
})
export const Password = Type.String({
  maxLength: 256,
  description: 'Documentation only (the TaskJuice form has this field). Segment uses a blank password: a non-empty value is neither stored nor sent, and the answer carries a warning.'
})
export const Region = StringEnum(['us', 'eu'], {
  description: 'us: SEGMENT_API_URL (https://api.segment.io); eu: SEGMENT_EU_API_URL (https://events.eu1.segmentapis.com). EU-workspace Write Keys need eu.'
})
export const Endpoint = Type.String({
  maxLength: 2048,
  description: 'A custom Segment-compatible base URL; accepted only when listed in the operator\'s SEGMENT_ALLOWED_ENDPOINTS.',
  examples: ['https://segment-proxy.example.com']
})
export const Name = Type.String({ minLength: 1, maxLength: 200 })
const Timestamp = Type.String({ format: 'date-time' })

export const CreateConnectionBody = Type.Object({
  name: Name,
  writeKey: WriteKey,
  password: Type.Optional(Password),
  region: Type.Optional(Region),
  endpoint: Type.Optional(Endpoint)
}, { additionalProperties: false, examples: [{ name: 'Client A production', writeKey: '9f8e7d6c5b4a39281706f5e4d3c2b1a0', region: 'us' }] })

export const Connection = Type.Object({
  id: Type.String(),
  name: Type.String(),
  region: Region,
  endpoint: Type.Optional(Type.String()),
  writeKeyHint: Type.String({ description: 'At most the last 4 characters of the Write Key', examples: ['…b1a0'] }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  warnings: Type.Optional(Type.Array(Type.String()))
}, {
  title: 'Connection',
  examples: [{ id: 'con_7hQ2xV9mLc4RtB1nKp8wZd', name: 'Client A production', region: 'us', writeKeyHint: '…b1a0', createdAt: '2026-11-28T12:00:00.000Z', updatedAt: '2026-11-28T12:00:00.000Z' }]
})

/** A connection as answered: never its Write Key. */
export type ConnectionView = Static<typeof Connection>
export type CreateConnectionInput = Static<typeof CreateConnectionBody>
