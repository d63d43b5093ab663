// Reads a V8 .cpuprofile (node --cpu-prof) and summarises where the time went: the top frames by
// self time, and time by area (a package, a file of the service, a part of Node), both self and
// inclusive. Run alone: `tsx bench/profile-summary.ts FILE.cpuprofile`.
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface Row {
  name: string
  ms: number
  /** Share of the busy (non-idle) time. */
  share: number
}

export interface ProfileSummary {
  totalMs: number
  idleMs: number
  busyMs: number
  topSelf: Row[]
  selfByArea: Row[]
  inclusiveByArea: Row[]
  /** Inclusive time of the service's own functions (src/). */
  inclusiveBySourceFrame: Row[]
}

const special = new Set(['(idle)', '(program)', '(garbage collector)', '(root)'])

/** The package, service file or Node module a frame belongs to. */
export function areaOf (frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame
  if (special.has(functionName)) return functionName
  if (url === '') return '(V8 builtins and generated code)'
  const modules = url.lastIndexOf('/node_modules/')
  if (modules !== -1) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/')
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!
  }
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/')
    return 'node:' + (parts[0] === 'internal' && parts.length > 2 ? parts[1]! : parts.at(-1)!)
  }
  const src = url.search(/\/(src|bench)\//)
  if (src !== -1) return url.slice(src + 1).replace(/\.js$/, '')
  return url
}

function frameName (frame: ProfileNode['callFrame']): string {
  const where = frame.url === '' ? '' : ` ${areaOf(frame)}:${frame.lineNumber + 1}`
  return `${frame.functionName === '' ? '(anonymous)' : frame.functionName}${where}`
}

function rows (map: Map<string, number>, busyMs: number, limit: number): Row[] {
  return [...map.entries()].map(([name, ms]) => ({ name, ms, share: ms / busyMs }))
    .sort((a, b) => b.ms - a.ms).slice(0, limit)
}

export function summariseProfile (file: string, limit = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

  const self = new Map<string, number>()
  const selfArea = new Map<string, number>()
  const inclusiveArea = new Map<string, number>()
  const inclusiveSource = new Map<string, number>()
  const areasOfNode = new Map<number, { areas: string[], sourceFrames: string[], harness: boolean }>()
  let totalMs = 0
  let idleMs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!
    // timeDeltas[i] is the time since the previous sample; attribute it to this sample's frame.
    const ms = (profile.timeDeltas[i] ?? 0) / 1000
    const node = byId.get(id)!
    totalMs += ms
    if (node.callFrame.functionName === '(idle)') {
      idleMs += ms
      continue
    }
    let stack = areasOfNode.get(id)
    if (stack === undefined) {
      const seen = new Set<string>()
      const sourceFrames = new Set<string>()
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const frame = byId.get(at)!.callFrame
        if (frame.functionName === '(root)') continue
        const area = areaOf(frame)
        seen.add(area)
        if (area.startsWith('src/')) sourceFrames.add(frameName(frame))
      }
      // The harness's own work in the process (the inspector stopping the profile) is left out.
      stack = { areas: [...seen], sourceFrames: [...sourceFrames], harness: seen.has('node:inspector') }
      areasOfNode.set(id, stack)
    }
    if (stack.harness) {
      totalMs -= ms
      continue
    }
    const name = frameName(node.callFrame)
    self.set(name, (self.get(name) ?? 0) + ms)
    const area = areaOf(node.callFrame)
    selfArea.set(area, (selfArea.get(area) ?? 0) + ms)
    for (const a of stack.areas) inclusiveArea.set(a, (inclusiveArea.get(a) ?? 0) + ms)
    for (const frame of stack.sourceFrames) inclusiveSource.set(frame, (inclusiveSource.get(frame) ?? 0) + ms)
  }
  const busyMs = totalMs - idleMs
  return {
    totalMs,
    idleMs,
    busyMs,
    topSelf: rows(self, busyMs, limit),
    selfByArea: rows(selfArea, busyMs, limit),
    inclusiveByArea: rows(inclusiveArea, busyMs, limit),
    inclusiveBySourceFrame: rows(inclusiveSource, busyMs, limit)
  }
}

export function formatRows (title: string, list: Row[]): string {
  const lines = list.map((row) => `${(row.share * 100).toFixed(1).padStart(6)} %  ${row.ms.toFixed(0).padStart(7)} ms  ${row.name}`)
  return `${title}\n${lines.join('\n')}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2]
  if (file === undefined) throw new Error('usage: tsx bench/profile-summary.ts FILE.cpuprofile')
  const summary = summariseProfile(file, Number(process.env.LIMIT ?? 30))
  console.log(`total ${summary.totalMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms, busy ${summary.busyMs.toFixed(0)} ms\n`)
  console.log(formatRows('Self time by frame', summary.topSelf) + '\n')
  console.log(formatRows('Self time by area', summary.selfByArea) + '\n')
  console.log(formatRows('Inclusive time by area', summary.inclusiveByArea) + '\n')
  console.log(formatRows('Inclusive time of the service\'s functions', summary.inclusiveBySourceFrame))
}
