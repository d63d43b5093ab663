import { existsSync, readFileSync } from 'node:fs'

// package.json is one level up from src/ and two from dist/src/; it is the one definition of the version.
const packageUrl = [new URL('../package.json', import.meta.url), new URL('../../package.json', import.meta.url)]
  .find((url) => existsSync(url))
const pkg = JSON.parse(readFileSync(packageUrl ?? new URL('../package.json', import.meta.url), 'utf8')) as { name: string, version: string }

export const serviceName: string = pkg.name
export const serviceVersion: string = pkg.version
export const userAgent = `${serviceName}/${serviceVersion} (+node ${process.versions.node})`
