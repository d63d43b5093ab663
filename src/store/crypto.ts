import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import type { EncryptionKey } from '../config.js'
import type { SealedSecret } from './store.js'

const NONCE_BYTES = 12
const TAG_BYTES = 16

export class DecryptError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DecryptError'
  }
}

/**
 * AES-256-GCM key ring: the first key seals, every key opens. The associated data binds a
 * ciphertext to its place (workspace and connection), so a ciphertext copied into another row
 * fails to open instead of yielding another client's key.
 */
export class KeyRing {
  readonly primary: EncryptionKey
  readonly #keys: Map<string, Buffer>

  constructor (keys: EncryptionKey[]) {
    const [primary] = keys
    if (primary === undefined) throw new Error('a key ring needs at least one key')
    for (const { kid, key } of keys) {
      if (key.length !== 32) throw new Error(`key ${kid} is not 32 bytes`)
    }
    this.primary = primary
    this.#keys = new Map(keys.map(({ kid, key }) => [kid, key]))
  }

  /** Whether the ring holds the key `kid` (a stored secret sealed under another cannot be opened). */
  has (kid: string): boolean {
    return this.#keys.has(kid)
  }

  seal (plaintext: string, associatedData: string): SealedSecret {
    const nonce = randomBytes(NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.primary.key, nonce, { authTagLength: TAG_BYTES })
    cipher.setAAD(Buffer.from(associatedData, 'utf8'))
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return { kid: this.primary.kid, sealed: Buffer.concat([nonce, body, cipher.getAuthTag()]) }
  }

  open (secret: SealedSecret, associatedData: string): string {
    const key = this.#keys.get(secret.kid)
    if (key === undefined) throw new DecryptError(`no key "${secret.kid}" in ENCRYPTION_KEYS`)
    if (secret.sealed.length < NONCE_BYTES + TAG_BYTES + 1) throw new DecryptError('ciphertext is truncated')
    const nonce = secret.sealed.subarray(0, NONCE_BYTES)
    const tag = secret.sealed.subarray(secret.sealed.length - TAG_BYTES)
    const body = secret.sealed.subarray(NONCE_BYTES, secret.sealed.length - TAG_BYTES)
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
      decipher.setAAD(Buffer.from(associatedData, 'utf8'))
      decipher.setAuthTag(tag)
      return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8')
    } catch {
      throw new DecryptError('ciphertext failed authentication')
    }
  }

  /** True when the secret is already sealed under the primary key. */
  isCurrent (secret: SealedSecret): boolean {
    return secret.kid === this.primary.kid
  }
}

/** Associated data for a connection's Write Key: moving the ciphertext to another row breaks it. */
export function connectionAad (workspaceId: string, connectionId: string): string {
  return `segment-forwarder/write-key/v1\0${workspaceId}\0${connectionId}`
}

/**
 * Associated data for an OAuth source's private key: the same binding to workspace and connection
 * as the Write Key's, under its own label, so neither ciphertext opens in the other's column.
 */
export function oauthKeyAad (workspaceId: string, connectionId: string): string {
  return `segment-forwarder/oauth-private-key/v1\0${workspaceId}\0${connectionId}`
}

export const CANARY_META_KEY = 'keyring-canary'
export const CANARY_AAD = 'segment-forwarder/canary/v1'
export const CANARY_PLAINTEXT = 'segment-forwarder canary'
