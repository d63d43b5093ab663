import { Type, type SchemaOptions, type TUnsafe } from '@sinclair/typebox'

/**
 * A string enum as `{type: 'string', enum}`: one clear ajv error ("must be equal to one of the
 * allowed values") and an OpenAPI enum, where a union of literals would give one error per branch.
 */
export function StringEnum<const T extends readonly string[]> (values: T, options: SchemaOptions = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ ...options, type: 'string', enum: [...values] })
}
