import { DecryptError, CANARY_AAD, CANARY_META_KEY, connectionAad, oauthKeyAad, type KeyRing } from './crypto.js'
import type { SealedSecret, Store } from './store.js'
import { deliveryAad } from '../delivery/payload.js'

export interface RewrapProgress {
  scanned: number
  rewrapped: number
  /** Rows a concurrent rotation changed under us; they already carry a fresh secret. */
  raced: number
  /** Queued deliveries' sealed events re-encrypted (src/delivery/). */
  deliveries: number
  /** Rows still sealed under another key: they lost every race, or the ring cannot open them. */
  left: number
}

export interface RewrapResult extends RewrapProgress {
  /** The connections `left` counts, with why. */
  leftRows: Array<{ id: string, reason: string }>
  /** Whether the canary is now sealed under the primary key (only once no row was left). */
  canaryCurrent: boolean
}

const PAGE = 200
/** Swaps tried per row before it is reported as left (each lost one means a rotation meanwhile). */
export const REWRAP_TRIES = 5

/**
 * Re-seals every Write Key, every OAuth private key and every queued delivery's events, then the
 * canary, under the ring's primary key. Each row is a
 * compare-and-set, so it is safe to interrupt, to rerun, and to run while replicas rotate keys.
 * The canary comes last and only when every row made it: it stands for "the stored data opens
 * under these keys", so it must not move to the new key while rows still need the old one.
 */
export async function rewrap (store: Store, ring: KeyRing, onProgress?: (progress: RewrapProgress) => void): Promise<RewrapResult> {
  const progress: RewrapProgress = { scanned: 0, rewrapped: 0, raced: 0, deliveries: 0, left: 0 }
  const leftRows: RewrapResult['leftRows'] = []
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
      try {
        for (let tries = 0; current !== undefined && !ring.isCurrent(current); tries++) {
          if (tries === REWRAP_TRIES) {
            leftRows.push({ id: row.id, reason: `changed by ${REWRAP_TRIES} concurrent rotations in a row` })
            break
          }
          if (await store.swapSealed(row.id, current, reseal(ring, current, aad))) {
            progress.rewrapped++
            break
          }
          progress.raced++
          current = (await store.getConnection(row.workspaceId, row.id))?.secret
        }
      } catch (error) {
        if (!(error instanceof DecryptError)) throw error
        leftRows.push({ id: row.id, reason: error.message })
      }
      progress.left = leftRows.length
    }
    after = rows[rows.length - 1]!.id
    onProgress?.({ ...progress })
  }
  await rewrapOAuthKeys(store, ring, progress, leftRows, onProgress)
  await rewrapDeliveries(store, ring, progress, onProgress)

  let canaryCurrent = false
  const canary = await store.getMeta(CANARY_META_KEY)
  if (canary !== undefined && leftRows.length === 0) {
    canaryCurrent = ring.isCurrent(canary) || await store.setMeta(CANARY_META_KEY, reseal(ring, canary, CANARY_AAD), canary)
  }
  return { ...progress, leftRows, canaryCurrent }
}

/** OAuth sources (migration 3): their private keys, as the Write Keys above, counted with them. */
async function rewrapOAuthKeys (store: Store, ring: KeyRing, progress: RewrapProgress, leftRows: RewrapResult['leftRows'], onProgress?: (progress: RewrapProgress) => void): Promise<void> {
  let after = ''
  for (;;) {
    const rows = await store.listSealedOAuth(after, PAGE)
    if (rows.length === 0) break
    for (const row of rows) {
      progress.scanned++
      const aad = oauthKeyAad(row.workspaceId, row.id)
      let current: SealedSecret | undefined = row.secret
      try {
        for (let tries = 0; current !== undefined && !ring.isCurrent(current); tries++) {
          if (tries === REWRAP_TRIES) {
            leftRows.push({ id: row.id, reason: `OAuth private key changed by ${REWRAP_TRIES} concurrent rotations in a row` })
            break
          }
          if (await store.swapSealedOAuth(row.id, current, reseal(ring, current, aad))) {
            progress.rewrapped++
            break
          }
          progress.raced++
          current = (await store.getConnection(row.workspaceId, row.id))?.oauth?.privateKey
        }
      } catch (error) {
        if (!(error instanceof DecryptError)) throw error
        leftRows.push({ id: row.id, reason: `OAuth private key: ${error.message}` })
      }
      progress.left = leftRows.length
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
