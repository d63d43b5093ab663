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
// OAuth sources (design/api.md § OAuth sources).
const OAuthIdentifier = (description: string, example: string) =>
  Type.String({ minLength: 1, maxLength: 256, pattern: '^[!-~]+$', description, examples: [example] })
const EXAMPLE_PRIVATE_KEY = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC…\n-----END PRIVATE KEY-----\n'
export const OAuthInputSchema = Type.Object({
  clientId: OAuthIdentifier('The OAuth app\'s id (Segment: Settings > Workspace settings > Access Management > OAuth application); the assertion\'s iss and sub.', '2Xyzabc123OAuthAppId'),
  keyId: OAuthIdentifier('The id Segment shows for the public key uploaded to the OAuth app; the assertion\'s kid.', '2XyzKeyId456'),
  privateKey: Type.String({
    minLength: 1,
    maxLength: 16384,
    description: 'The private key matching that public key: PKCS#8 PEM (-----BEGIN PRIVATE KEY-----), RSA, at least 2048 bits, unencrypted. Stored encrypted; never returned or logged.'
  }),
  authServer: Type.Optional(Type.String({
    maxLength: 2048,
    description: 'A custom token server base URL, accepted only when listed in SEGMENT_ALLOWED_ENDPOINTS. Default: SEGMENT_OAUTH_URL (us, https://oauth2.segment.io) or SEGMENT_EU_OAUTH_URL (eu, https://oauth2.eu1.segmentapis.com), by the connection\'s region.'
  }))
}, {
  additionalProperties: false,
  description: 'OAuth 2.0 for a source whose workspace enforces it: tokens by the client-credentials grant with an RS256 client assertion; upstream requests then carry Authorization: Bearer and the Write Key as writeKey in the body.',
  examples: [{ clientId: '2Xyzabc123OAuthAppId', keyId: '2XyzKeyId456', privateKey: EXAMPLE_PRIVATE_KEY }]
})
const OAuthView = Type.Object({
  clientId: Type.String(),
  keyId: Type.String()
}, { description: 'Set on OAuth sources; never the private key.' })
const Timestamp = Type.String({ format: 'date-time' })

export const CreateConnectionBody = Type.Object({
  name: Name,
  writeKey: WriteKey,
  password: Type.Optional(Password),
  region: Type.Optional(Region),
  endpoint: Type.Optional(Endpoint),
  oauth: Type.Optional(OAuthInputSchema)
}, { additionalProperties: false, examples: [{ name: 'Client A production', writeKey: '9f8e7d6c5b4a39281706f5e4d3c2b1a0', region: 'us' }] })

export const Connection = Type.Object({
  id: Type.String(),
  name: Type.String(),
  region: Region,
  endpoint: Type.Optional(Type.String()),
  writeKeyHint: Type.String({ description: 'At most the last 4 characters of the Write Key', examples: ['…b1a0'] }),
  oauth: Type.Optional(OAuthView),
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
/** An OAuth source's credentials as a caller gives them. */
export type OAuthInput = Static<typeof OAuthInputSchema>
