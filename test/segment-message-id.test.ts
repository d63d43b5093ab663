import t from 'tap'
import { derivedMessageId, derivedMessageIds, randomMessageId, type MessageIdSeed } from '../src/segment/message-id.js'

const seed: MessageIdSeed = { workspaceId: 'ws_1', connectionId: 'con_1', action: 'batch-send', idempotencyKey: 'step-7' }
const uuid = /^sfw-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

t.test('random ids are prefixed UUIDv4s, fresh each time, within Segment\'s 100 characters', async (t) => {
  const ids = new Set(Array.from({ length: 1000 }, () => randomMessageId()))
  t.equal(ids.size, 1000)
  for (const id of [...ids].slice(0, 10)) {
    t.match(id, uuid)
    t.equal(id[18], '4', 'version 4')
    t.ok(id.length <= 100)
  }
})

t.test('derived ids are stable prefixed UUIDv8s', async (t) => {
  const id = derivedMessageId(seed, 0)
  t.match(id, uuid)
  t.equal(id[18], '8', 'version 8')
  t.match(id[23], /[89ab]/, 'RFC 9562 variant')
  t.equal(derivedMessageId({ ...seed }, 0), id, 'same inputs, same id')
  // A pinned value: a change of derivation would silently break retries across a deploy.
  t.equal(id, 'sfw-6db07284-735b-8704-92dc-521a4a45c42e')
})

t.test('any input that differs gives a different id', async (t) => {
  const base = derivedMessageId(seed, 3)
  const variants = [
    derivedMessageId({ ...seed, workspaceId: 'ws_2' }, 3),
    derivedMessageId({ ...seed, connectionId: 'con_2' }, 3),
    derivedMessageId({ ...seed, action: 'track-event' }, 3),
    derivedMessageId({ ...seed, idempotencyKey: 'step-8' }, 3),
    derivedMessageId(seed, 4),
    // Length-prefixing: moving characters between fields changes the id.
    derivedMessageId({ ...seed, workspaceId: 'ws_1c', connectionId: 'on_1' }, 3)
  ]
  t.equal(new Set([base, ...variants]).size, variants.length + 1)
})

t.test('two workspaces using the same key never share ids', async (t) => {
  const a = derivedMessageIds({ ...seed, workspaceId: 'ws_a' }, 2500)
  const b = derivedMessageIds({ ...seed, workspaceId: 'ws_b' }, 2500)
  const ids = new Set<string>()
  for (let i = 0; i < 2500; i++) ids.add(a(i)).add(b(i))
  t.equal(ids.size, 5000)
})

t.test('an item\'s id does not depend on the batch size', async (t) => {
  const small = derivedMessageIds(seed, 3)
  const large = derivedMessageIds(seed, 2500)
  t.equal(small(2), large(2))
  t.equal(derivedMessageId(seed, 2), large(2))
  t.throws(() => small(3), RangeError)
  t.throws(() => small(-1), RangeError)
})
