import { CANARY_AAD, CANARY_META_KEY, connectionAad, oauthKeyAad, type KeyRing } from './crypto.js'
import type { SealedSecret, Store } from './store.js'
import { deliveryAad } from '../delivery/payload.js'

export interface RewrapProgress {
  scanned: number
  rewrapped: number
  /** Rows a concurrent rotation changed under us; they already carry a fresh secret. */
  raced: number
  /** Queued deliveries' sealed events re-encrypted (src/delivery/). */
  deliveries: number
}

const PAGE = 200

/**
 * Re-seals every Write Key, every OAuth private key (and the canary) under the ring's primary key. Each row is a
 * compare-and-set, so it is safe to interrupt, to rerun, and to run while replicas rotate keys.
 */
export async function rewrap (store: Store, ring: KeyRing, onProgress?: (progress: RewrapProgress) => void): Promise<RewrapProgress> {
  const progress: RewrapProgress = { scanned: 0, rewrapped: 0, raced: 0, deliveries: 0 }
  const canary = await store.getMeta(CANARY_META_KEY)
  if (canary !== undefined && !ring.isCurrent(canary)) {
    await store.setMeta(CANARY_META_KEY, reseal(ring, canary, CANARY_AAD), canary)
  }
  let after = ''
  for (;;) {
    const rows = await store.listSealed(after, PAGE)
    if (rows.length === 0) break
    for (const row of rows) {
      progress.scanned++
      const aad = connectionAad(row.workspaceId, row.id)
      let current: SealedSecret | undefined = row.secret
      // A failed swap means a rotation wrote a new secret meanwhile: read it again and re-seal
      // that one, in case the replica that wrote it still sealed under an older key.
      for (let tries = 0; current !== undefined && !ring.isCurrent(current) && tries < 5; tries++) {
        if (await store.swapSealed(row.id, current, reseal(ring, current, aad))) {
          progress.rewrapped++
          break
        }
        progress.raced++
        current = (await store.getConnection(row.workspaceId, row.id))?.secret
      }
    }
    after = rows[rows.length - 1]!.id
    onProgress?.({ ...progress })
  }
  await rewrapOAuthKeys(store, ring, progress, onProgress)
  await rewrapDeliveries(store, ring, progress, onProgress)
  return progress
}

/** OAuth sources (migration 3): their private keys, as the Write Keys above, counted with them. */
async function rewrapOAuthKeys (store: Store, ring: KeyRing, progress: RewrapProgress, onProgress?: (progress: RewrapProgress) => void): Promise<void> {
  let after = ''
  for (;;) {
    const rows = await store.listSealedOAuth(after, PAGE)
    if (rows.length === 0) break
    for (const row of rows) {
      progress.scanned++
      const aad = oauthKeyAad(row.workspaceId, row.id)
      let current: SealedSecret | undefined = row.secret
      for (let tries = 0; current !== undefined && !ring.isCurrent(current) && tries < 5; tries++) {
        if (await store.swapSealedOAuth(row.id, current, reseal(ring, current, aad))) {
          progress.rewrapped++
          break
        }
        progress.raced++
        current = (await store.getConnection(row.workspaceId, row.id))?.oauth?.privateKey
      }
    }
    after = rows[rows.length - 1]!.id
    onProgress?.({ ...progress })
  }
}

/**
 * Queued (and failed) deliveries' events. A failed swap means the delivery was delivered or
 * discarded meanwhile (its events are gone), or another rewrap got there first: nothing to redo.
 */
async function rewrapDeliveries (store: Store, ring: KeyRing, progress: RewrapProgress, onProgress?: (progress: RewrapProgress) => void): Promise<void> {
  let after = ''
  for (;;) {
    const rows = await store.queue.listSealedEvents(after, PAGE)
    if (rows.length === 0) break
    for (const row of rows) {
      if (ring.isCurrent(row.payload)) continue
      const aad = deliveryAad(row.workspaceId, row.connectionId, row.id)
      if (await store.queue.swapSealedEvents(row.id, row.payload, reseal(ring, row.payload, aad))) progress.deliveries++
    }
    after = rows[rows.length - 1]!.id
    onProgress?.({ ...progress })
  }
}

function reseal (ring: KeyRing, secret: SealedSecret, aad: string): SealedSecret {
  return ring.seal(ring.open(secret, aad), aad)
}
