import { AliasBody, BatchBody, GroupBody, IdentifyBody, PageBody, TrackBody } from './schemas.js'

// The six actions a workflow can perform on a connection, and the Segment call behind each.
export const actions = {
  'track-event': {
    type: 'track',
    path: '/v1/track',
    body: TrackBody,
    summary: 'Track an event',
    description: 'Sends a Segment track call: something the user did, such as "Order Completed", with its properties.'
  },
  'identify-user': {
    type: 'identify',
    path: '/v1/identify',
    body: IdentifyBody,
    summary: 'Identify a user',
    description: 'Sends a Segment identify call: ties a user to their traits (email, name, plan, …).'
  },
  'group-user': {
    type: 'group',
    path: '/v1/group',
    body: GroupBody,
    summary: 'Add a user to a group',
    description: 'Sends a Segment group call: ties a user to a group (account, company) and records its traits.'
  },
  'page-view': {
    type: 'page',
    path: '/v1/page',
    body: PageBody,
    summary: 'Record a page view',
    description: 'Sends a Segment page call: a web page the user saw.'
  },
  'alias-user': {
    type: 'alias',
    path: '/v1/alias',
    body: AliasBody,
    summary: 'Alias a user',
    description: 'Sends a Segment alias call: merges a previous id (often an anonymousId) into a user id.'
  },
  'batch-send': {
    type: 'batch',
    path: '/v1/batch',
    body: BatchBody,
    summary: 'Send a batch of calls',
    description: 'Sends 1 to 2,500 Segment calls (track, identify, group, page, screen, alias) in one request. The batch\'s `context` and `integrations` apply to every item.'
  }
} as const

export type ActionName = keyof typeof actions
export const actionNames = Object.keys(actions) as ActionName[]
