// What each scenario sends. The service and the baseline get byte-identical requests (the baseline
// ignores the bearer token and the Idempotency-Key).
import type { Request } from 'autocannon'

export interface Target {
  url: string
  token: string
  connectionId: string
}

export interface Scenario {
  name: string
  description: string
  /** Run against the service on PostgreSQL rather than the embedded SQLite default. */
  postgres?: boolean
  /** autocannon connections for this scenario (BENCH_CONNECTIONS otherwise). */
  connections?: number
  /** Extra environment of the service (the baseline ignores it). */
  serviceEnv?: Record<string, string>
  requests: (target: Target) => Request[]
}

/** The Write Key of the bench's connection, and the baseline's Basic header. */
export const BENCH_WRITE_KEY = 'wk_bench_0123456789abcdef'

const timestamp = '2025-03-14T09:26:53.589Z'

/** A track call of about 1 KB, shaped like a workflow's order event. */
export function trackEvent (n = 0): Record<string, unknown> {
  return {
    userId: `user_${(0x8f2a61 + n).toString(16)}`,
    event: 'Order Completed',
    properties: {
      orderId: `ord_${50314 + n}`,
      checkoutId: 'chk_7f1e2d9c4b',
      revenue: 129.9,
      shipping: 4.9,
      tax: 21.65,
      discount: 10,
      coupon: 'SPRING10',
      currency: 'EUR',
      affiliation: 'Online Store',
      products: [
        { productId: 'prod_42', sku: 'SKU-42', name: 'Ceramic Pour-Over Set', category: 'Kitchen', brand: 'Hario', variant: 'White', price: 64.95, quantity: 1, position: 1 },
        { productId: 'prod_77', sku: 'SKU-77', name: 'Single-Origin Beans 500 g', category: 'Coffee', brand: 'Terres de Café', variant: 'Ethiopia', price: 24.9, quantity: 2, position: 2 },
        { productId: 'prod_13', sku: 'SKU-13', name: 'Paper Filters (100)', category: 'Kitchen', brand: 'Hario', price: 5.5, quantity: 1, position: 3 }
      ],
      workflow: { runId: 'run_8812', step: 3, trigger: 'shopify.order.paid' }
    },
    context: {
      ip: '203.0.113.7',
      locale: 'fr-FR',
      timezone: 'Europe/Paris',
      userAgent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
      campaign: { name: 'spring-sale', source: 'newsletter', medium: 'email' }
    },
    timestamp
  }
}

/** A batch item of about 450 bytes with its own messageId. */
function batchItem (index: number): Record<string, unknown> {
  const kind = index % 10
  const common = {
    userId: `user_${(0x8f2a61 + index).toString(16)}`,
    messageId: `bench-${index.toString().padStart(6, '0')}-6f1c9a4e-2b7d-4e0a-9c3f-5d8e1a2b3c4d`,
    timestamp,
    context: { ip: '203.0.113.7', locale: 'fr-FR', campaign: { source: 'newsletter', medium: 'email' } }
  }
  if (kind === 0) {
    return { type: 'identify', ...common, traits: { email: `camille.durand+${index}@example.com`, firstName: 'Camille', lastName: 'Durand', plan: 'pro', company: 'Initech', seats: 12, country: 'FR' } }
  }
  if (kind === 1) {
    return { type: 'page', ...common, name: 'Pricing', category: 'Marketing', properties: { url: 'https://www.example.com/pricing?ref=nl', path: '/pricing', referrer: 'https://www.google.com/', title: 'Pricing – Example', search: '?ref=nl' } }
  }
  return {
    type: 'track',
    ...common,
    event: 'Product Viewed',
    properties: { productId: `prod_${index}`, sku: `SKU-${index}`, name: 'Ceramic Pour-Over Set', category: 'Kitchen', brand: 'Hario', price: 64.95, currency: 'EUR', position: index % 24, list: 'search results' }
  }
}

/**
 * A batch of `count` items. The batch names its own `context.library`, and every item has a
 * messageId, so the service adds nothing per item and the built body stays the size of this one
 * (under Segment's 500,000-byte limit).
 */
export function batchBody (count: number): Record<string, unknown> {
  return {
    batch: Array.from({ length: count }, (_, index) => batchItem(index)),
    context: { library: { name: 'taskjuice-workflow', version: '2.4.0' } }
  }
}

/**
 * A batch item of about 570 bytes whose properties nest objects and arrays, as workflow payloads
 * do (an order with lines, addresses and tags); no messageId, so the service generates one.
 */
function nestedItem (index: number): Record<string, unknown> {
  return {
    type: 'track',
    userId: `user_${(0x8f2a61 + index).toString(16)}`,
    event: 'Order Line Shipped',
    timestamp,
    properties: {
      order: { id: `ord_${50314 + index}`, total: 129.9, currency: 'EUR', coupons: ['SPRING10'] },
      lines: [
        { sku: 'SKU-42', qty: 1, price: 64.95, attributes: { color: 'white', size: null } },
        { sku: 'SKU-77', qty: 2, price: 24.9, attributes: { roast: 'light', origin: ['Ethiopia', 'Sidamo'] } }
      ],
      shipping: { carrier: 'colissimo', address: { city: 'Lyon', zip: '69003', country: 'FR' }, eta: [2, 4] },
      tags: ['repeat-customer', 'newsletter', `cohort-${index % 12}`]
    },
    context: { ip: '203.0.113.7', locale: 'fr-FR' }
  }
}

/** A batch of `count` nested items (700: about 400 KB built). */
export function nestedBatchBody (count: number): Record<string, unknown> {
  return { batch: Array.from({ length: count }, (_, index) => nestedItem(index)) }
}

const mixBodies: Record<string, Record<string, unknown>> = {
  'track-event': trackEvent(),
  'identify-user': { userId: 'user_8f2a61', traits: { email: 'camille.durand@example.com', firstName: 'Camille', lastName: 'Durand', plan: 'pro' }, timestamp },
  'group-user': { userId: 'user_8f2a61', groupId: 'acct_1170', traits: { name: 'Initech', industry: 'Software', employees: 120 } },
  'page-view': { anonymousId: '3c5b8e2e-8d5b-4c1e-9a4e-1f0e2b7f8a11', name: 'Pricing', category: 'Marketing', properties: { url: 'https://www.example.com/pricing', path: '/pricing', title: 'Pricing – Example' } },
  'alias-user': { previousId: '3c5b8e2e-8d5b-4c1e-9a4e-1f0e2b7f8a11', userId: 'user_8f2a61' },
  'batch-send': batchBody(20)
}

export const trackJson = JSON.stringify(trackEvent())
export const batchJson = JSON.stringify(batchBody(1000))
export const nestedBatchJson = JSON.stringify(nestedBatchBody(700))

function post (target: Target, action: string, body: string, headers: Record<string, string> = {}): Request {
  return {
    method: 'POST',
    path: `/v1/connections/${target.connectionId}/actions/${action}`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${target.token}`, ...headers },
    body
  }
}

const track: Scenario = {
  name: 'track-event',
  description: `track-event, ${trackJson.length} B`,
  requests: (target) => [post(target, 'track-event', trackJson)]
}

export const scenarios: Scenario[] = [
  track,
  {
    name: 'track-event-32',
    description: `track-event, 32 connections, coalescing on (${trackJson.length} B)`,
    connections: 32,
    requests: track.requests
  },
  {
    name: 'track-event-32-off',
    description: 'track-event, 32 connections, COALESCE=off',
    connections: 32,
    serviceEnv: { COALESCE: 'off' },
    requests: track.requests
  },
  {
    name: 'batch-send-nested',
    description: `batch-send, 700 nested events, ${nestedBatchJson.length.toLocaleString('en')} B`,
    requests: (target) => [post(target, 'batch-send', nestedBatchJson)]
  },
  {
    name: 'batch-send',
    description: `batch-send, 1,000 events, ${batchJson.length.toLocaleString('en')} B`,
    requests: (target) => [post(target, 'batch-send', batchJson)]
  },
  {
    name: 'mix',
    description: 'the six actions in turn (batch of 20)',
    requests: (target) => Object.entries(mixBodies).map(([action, body]) => post(target, action, JSON.stringify(body)))
  },
  {
    name: 'track-idempotent',
    description: 'track-event with an Idempotency-Key',
    requests: (target) => [post(target, 'track-event', trackJson, { 'idempotency-key': 'run-8812-step-3' })]
  },
  {
    name: 'track-postgres',
    description: 'track-event, service on PostgreSQL',
    postgres: true,
    requests: track.requests
  }
]
