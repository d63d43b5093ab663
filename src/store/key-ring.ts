import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { dirname, join, resolve } from 'node:path'
import { parseEncryptionKeys, type Config } from '../config.js'
import { KeyRing } from './crypto.js'

export const KEY_FILE_NAME = 'encryption.key'

export interface ResolvedKeyRing {
  ring: KeyRing
  /** Set when the embedded default made a new key file on this start. */
  generatedKeyFile?: string
  /** Set when an existing key file can be read by its group or others (it should be mode 0600). */
  exposedKeyFile?: { file: string, mode: string }
}

/**
 * The key ring from ENCRYPTION_KEYS, or, on the embedded SQLite default, from a key file next to
 * the database, generated (mode 0600) on first start and reused afterwards.
 */
export function resolveKeyRing (config: Pick<Config, 'encryptionKeys' | 'database'>): ResolvedKeyRing {
  if (config.encryptionKeys !== undefined) return { ring: new KeyRing(config.encryptionKeys) }
  if (config.database.kind !== 'sqlite') {
    throw new Error('ENCRYPTION_KEYS must be set when DATABASE_URL is PostgreSQL')
  }
  const file = join(dirname(resolve(config.database.path)), KEY_FILE_NAME)
  try {
    const ring = new KeyRing(parseEncryptionKeys(readFileSync(file, 'utf8').trim(), file))
    const mode = statSync(file).mode & 0o777
    return (mode & 0o077) === 0 ? { ring } : { ring, exposedKeyFile: { file, mode: mode.toString(8).padStart(4, '0') } }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const kid = `local-${new Date().toISOString().slice(0, 10)}`
  // 'wx': if another process created the file first, fail rather than overwrite its key.
  writeFileSync(file, `${kid}:${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' })
  chmodSync(file, 0o600)
  if ((statSync(file).mode & 0o077) !== 0) throw new Error(`${file} must not be readable by group or others`)
  return { ring: new KeyRing(parseEncryptionKeys(readFileSync(file, 'utf8').trim(), file)), generatedKeyFile: file }
}
