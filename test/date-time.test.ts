// The service's `date-time` format must answer exactly as ajv-formats' full mode, which it replaces
// for speed: hand-picked edges first, then generated strings near the format, compared one by one.
import t from 'tap'
import fc from 'fast-check'
import { fullFormats } from 'ajv-formats/dist/formats.js'
import { isDateTime, useFastDateTime } from '../src/segment/date-time.js'
import { ajvOptions } from '../src/app.js'
import { fuzzRuns, fuzzSeed } from './support/break.js'

const reference = fullFormats['date-time'] as { validate: (text: string) => boolean }

t.test('edges: the same answer as ajv-formats, and the answer RFC 3339 gives', (t) => {
  const cases: Array<[string, boolean]> = [
    ['2025-03-14T09:26:53Z', true],
    ['2025-03-14T09:26:53.589Z', true],
    ['2025-03-14t09:26:53z', true],
    ['2025-03-14 09:26:53+01:00', true],
    ['2025-03-14T09:26:53+0100', true],
    ['2025-03-14T09:26:53-05', true],
    ['2025-03-14T09:26:53.123456789+05:30', true],
    ['2024-02-29T00:00:00Z', true],
    ['2000-02-29T00:00:00Z', true],
    ['1900-02-29T00:00:00Z', false],
    ['2025-02-29T00:00:00Z', false],
    ['2025-02-30T00:00:00Z', false],
    ['2025-04-31T00:00:00Z', false],
    ['2025-00-10T00:00:00Z', false],
    ['2025-13-10T00:00:00Z', false],
    ['2025-01-00T00:00:00Z', false],
    ['2025-03-14T24:00:00Z', false],
    ['2025-03-14T23:60:00Z', false],
    ['2025-03-14T23:59:60Z', true],
    ['2025-03-14T23:59:60.5Z', true],
    ['2025-03-14T22:59:60Z', false],
    ['2025-03-14T15:59:60-08:00', true],
    ['2025-03-14T23:59:61Z', false],
    ['2025-03-14T09:26:59.99999999999999Z', true],
    ['2025-03-14T09:26:59.999999999999999Z', false],
    ['2025-03-14T23:59:59.999999999999999Z', true],
    ['2025-03-14T23:59:60.999999999999999Z', false],
    ['2025-03-14T09:26:59.9999999999999999999999999999+01:00', false],
    ['2025-03-14T24:59:60+01:00', true],
    ['2025-07-31T00:00:00Z', true],
    ['2025-08-31T00:00:00Z', true],
    ['2025-09-31T00:00:00Z', false],
    ['2025-06-31T00:00:00Z', false],
    ['2025-12-31T00:00:00Z', true],
    ['2025-11-31T00:00:00Z', false],
    ['2025-03-14T09:26:53', false],
    ['2025-03-14T09:26:53+24:00', false],
    ['2025-03-14T09:26:53+01:60', false],
    ['2025-03-14T09:26:53+1', false],
    ['2025-03-14T09:26:53.Z', false],
    ['2025-03-14T09:26Z', false],
    ['2025-03-14', false],
    ['2025-03-14TT09:26:53Z', false],
    ['2025-03-14T09:26:53Z ', false],
    [' 2025-03-14T09:26:53Z', false],
    ['2025-03-14\u00a009:26:53Z', true],
    ['2025-03-14T09:26:53\u0660Z', false],
    ['+2025-03-14T09:26:53Z', false],
    ['now', false],
    ['', false]
  ]
  for (const [text, valid] of cases) {
    t.equal(reference.validate(text), valid, `ajv-formats: ${JSON.stringify(text)}`)
    t.equal(isDateTime(text), valid, `ours: ${JSON.stringify(text)}`)
  }
  t.end()
})

t.test('generated strings near the format: the same answer as ajv-formats', (t) => {
  const seed = fuzzSeed()
  t.comment(`fuzz seed ${seed}: rerun with FUZZ_SEED=${seed}`)
  const digits = (n: number): fc.Arbitrary<string> => fc.array(fc.constantFrom('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'), { minLength: n, maxLength: n }).map((d) => d.join(''))
  const part = fc.oneof(digits(2), digits(1), digits(3), fc.constantFrom('00', '01', '02', '07', '08', '11', '12', '23', '24', '28', '29', '30', '31', '59', '60', '61'))
  // Long runs of 9s and 0s reach the rounding of the seconds (59.999… → 60) that ajv-formats does.
  const fraction = fc.oneof(fc.constant(''), fc.constant('.'), digits(1).map((d) => '.' + d), digits(4).map((d) => '.' + d),
    fc.string({ unit: fc.constantFrom('9', '9', '0'), minLength: 10, maxLength: 30 }).map((d) => '.' + d))
  const near = fc.tuple(
    fc.oneof(digits(4), fc.constantFrom('2000', '1900', '2024', '2025', '0000')),
    fc.constantFrom('-', '-', '/'), part, fc.constantFrom('-', '-', ':'), part,
    // Every character JavaScript's \s matches is a separator for ajv-formats.
    fc.constantFrom('T', 't', ' ', '\t', '\n', '\u00a0', '\u2028', '\u3000', '\ufeff', '\u200b', 'X', 'TT'),
    part, fc.constantFrom(':', ':', '.'), part, fc.constantFrom(':', ':', ''), part,
    fraction,
    fc.oneof(fc.constantFrom('Z', 'z', '', 'UTC', '+', '-'), fc.tuple(fc.constantFrom('+', '-'), part, fc.constantFrom('', ':', '::'), fc.oneof(fc.constant(''), part)).map((p) => p.join('')))
  ).map((p) => p.join(''))
  fc.assert(fc.property(fc.oneof(near, fc.string({ maxLength: 30 })), (text) => isDateTime(text) === reference.validate(text)), {
    seed, numRuns: fuzzRuns(20_000)
  })
  t.pass('every generated string got the same answer')
  t.end()
})

t.test('the app\'s ajv uses this format, after ajv-formats', (t) => {
  t.equal(ajvOptions.onCreate, useFastDateTime)
  let added: { name: string, validate: (text: string) => boolean } | undefined
  useFastDateTime({ addFormat: (name, format) => { added = { name, validate: format.validate } } })
  t.equal(added?.name, 'date-time')
  t.equal(added?.validate, isDateTime)
  t.end()
})
