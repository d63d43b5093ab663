import { CANARY_AAD, CANARY_META_KEY, CANARY_PLAINTEXT, type KeyRing } from './crypto.js'
import type { Store } from './store.js'

/**
 * A known value sealed under the key ring. If the ring cannot open it, the configured keys are
 * not the ones the stored Write Keys were sealed with: readiness fails and start refuses. So does
 * a stored Write Key sealed under a key id the ring does not hold (checkKeyIds).
 */
export async function ensureCanary (store: Store, ring: KeyRing): Promise<void> {
  const existing = await store.getMeta(CANARY_META_KEY)
  if (existing === undefined) {
    await store.setMeta(CANARY_META_KEY, ring.seal(CANARY_PLAINTEXT, CANARY_AAD))
  } else {
    await checkCanary(store, ring)
  }
  await checkKeyIds(store, ring)
}

export async function checkCanary (store: Store, ring: KeyRing): Promise<void> {
  const canary = await store.getMeta(CANARY_META_KEY)
  if (canary === undefined) throw new Error('the key ring canary is missing')
  if (ring.open(canary, CANARY_AAD) !== CANARY_PLAINTEXT) throw new Error('the key ring canary does not match')
}

/** Throws naming the key ids that stored Write Keys are sealed under and the ring lacks. */
export async function checkKeyIds (store: Store, ring: KeyRing): Promise<void> {
  const missing = (await store.keyIdsInUse()).filter((kid) => !ring.has(kid))
  if (missing.length > 0) {
    throw new Error(`stored Write Keys are sealed under key id${missing.length === 1 ? '' : 's'} ${missing.map((kid) => `"${kid}"`).join(', ')}, missing from ENCRYPTION_KEYS (run rewrap while the old key is still configured)`)
  }
}
