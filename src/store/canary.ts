import { CANARY_AAD, CANARY_META_KEY, CANARY_PLAINTEXT, type KeyRing } from './crypto.js'
import type { Store } from './store.js'

/**
 * A known value sealed under the key ring. If the ring cannot open it, the configured keys are
 * not the ones the stored Write Keys were sealed with: readiness fails and start refuses.
 */
export async function ensureCanary (store: Store, ring: KeyRing): Promise<void> {
  const existing = await store.getMeta(CANARY_META_KEY)
  if (existing === undefined) {
    await store.setMeta(CANARY_META_KEY, ring.seal(CANARY_PLAINTEXT, CANARY_AAD))
    return
  }
  await checkCanary(store, ring)
}

export async function checkCanary (store: Store, ring: KeyRing): Promise<void> {
  const canary = await store.getMeta(CANARY_META_KEY)
  if (canary === undefined) throw new Error('the key ring canary is missing')
  if (ring.open(canary, CANARY_AAD) !== CANARY_PLAINTEXT) throw new Error('the key ring canary does not match')
}
