// The `date-time` format (RFC 3339 § 5.6, a time zone required), with exactly the answers of
// ajv-formats' `full` mode, which it replaces: impossible dates (2025-02-30) and times (25:00) are
// refused, a leap second only at 23:59 UTC. ajv-formats splits the string and runs two regular expressions
// with captures for each value; this is one test without captures, then arithmetic on character
// codes. Each item of a batch has a timestamp: on a 1,000-event batch, ajv-formats' check was over
// half of the schema validation (BENCHMARKS.md). test/date-time.test.ts holds the two to the same
// answers.

const SHAPE = /^\d{4}-\d\d-\d\d[tT\s]\d\d:\d\d:\d\d(?:\.\d+)?(?:[zZ]|[+-]\d\d(?::?\d\d)?)$/
const DAYS_IN_MONTH = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
const ZERO = 48
const DOT = 46
const COLON = 58

/** The two ASCII digits at `at` as a number (the shape was checked first). */
function twoDigits (text: string, at: number): number {
  return (text.charCodeAt(at) - ZERO) * 10 + text.charCodeAt(at + 1) - ZERO
}

function isLeapYear (year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
}

export function isDateTime (text: string): boolean {
  if (!SHAPE.test(text)) return false
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH[[:]MM])
  const year = twoDigits(text, 0) * 100 + twoDigits(text, 2)
  const month = twoDigits(text, 5)
  const day = twoDigits(text, 8)
  if (month < 1 || month > 12 || day < 1 || day > (month === 2 && isLeapYear(year) ? 29 : DAYS_IN_MONTH[month]!)) return false

  const hour = twoDigits(text, 11)
  const minute = twoDigits(text, 14)
  let seconds = twoDigits(text, 17)
  let zone = 19
  if (text.charCodeAt(zone) === DOT) {
    zone++
    while (text.charCodeAt(zone) - ZERO >= 0 && text.charCodeAt(zone) - ZERO <= 9) zone++
    // ajv-formats compares the seconds as a number: with 15 or more fraction digits, 59.999… rounds
    // to 60 (and 60.999… to 61). Below 59 whole seconds no fraction can reach 60.
    if (seconds >= 59) seconds = Number(text.slice(17, zone))
  }
  let zoneSign = 1
  let zoneHours = 0
  let zoneMinutes = 0
  if (zone + 1 < text.length) {
    // ±HH, ±HHMM or ±HH:MM
    zoneSign = text[zone] === '-' ? -1 : 1
    zoneHours = twoDigits(text, zone + 1)
    if (zone + 3 < text.length) zoneMinutes = twoDigits(text, text.charCodeAt(zone + 3) === COLON ? zone + 4 : zone + 3)
  }
  if (zoneHours > 23 || zoneMinutes > 59) return false
  if (hour <= 23 && minute <= 59 && seconds < 60) return true
  // A leap second (:60) only where the time is 23:59 in UTC. (As in ajv-formats, this also lets
  // through an hour or minute out of range that an offset brings back to 23:59, e.g. 24:59:60+01:00.)
  const utcMinute = minute - zoneMinutes * zoneSign
  const utcHour = hour - zoneHours * zoneSign - (utcMinute < 0 ? 1 : 0)
  return (utcHour === 23 || utcHour === -1) && (utcMinute === 59 || utcMinute === -1) && seconds < 61
}

/**
 * For Fastify's `ajv.onCreate`: runs after ajv-formats, so this `date-time` replaces its own.
 * Without ajv-formats' `compare`: no schema here uses formatMinimum/formatMaximum on a date-time
 * (ajv would refuse to compile one, so adding one cannot go unnoticed).
 */
export function useFastDateTime (ajv: { addFormat: (name: string, format: { type: 'string', validate: (text: string) => boolean }) => unknown }): void {
  ajv.addFormat('date-time', { type: 'string', validate: isDateTime })
}
