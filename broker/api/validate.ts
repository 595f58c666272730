/*
 * The one validator of the management API: checks a value against a schema of the OpenAPI
 * document (api/openapi.ts), which stays the only description of what a request may hold. It knows
 * the JSON Schema keywords that document uses — type (one or several), enum, minimum, maximum,
 * minLength, maxLength (in code points), pattern, properties, required, additionalProperties,
 * minProperties, maxProperties, items, minItems, maxItems, default and $ref to components — and
 * refuses a schema with any other keyword, so that the document cannot say more than is checked.
 *
 * Query and path parameters arrive as text: `coerceParameter` turns them into the schema's type
 * first ("5" → 5 for an integer, "true" → true for a boolean), and refuses text that is not one.
 */

export type Schema = Readonly<Record<string, unknown>>

export interface Invalid {
  /** Where: `body.qos`, `body.properties.userProperties.x`, `query.limit`, `path.clientid`. */
  readonly field: string
  readonly message: string
}

const KNOWN = new Set([
  'type', 'enum', 'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'properties', 'required',
  'additionalProperties', 'minProperties', 'maxProperties', 'items', 'minItems', 'maxItems', 'default', '$ref',
  'description', 'format',
])

const patterns = new Map<string, RegExp>()
const regex = (pattern: string): RegExp => {
  let compiled = patterns.get(pattern)
  if (!compiled) patterns.set(pattern, compiled = new RegExp(pattern, 'u'))
  return compiled
}

function typeOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number'
  return typeof value
}

const fits = (actual: string, wanted: string): boolean => actual === wanted || (wanted === 'number' && actual === 'integer')

export class SchemaResolver {
  constructor(private readonly components: Readonly<Record<string, Schema>>) {
    for (const [name, schema] of Object.entries(components)) this.checkKeywords(schema, `#/components/schemas/${name}`)
  }

  resolve(schema: Schema): Schema {
    const target = schema.$ref
    if (typeof target !== 'string') return schema
    const name = /^#\/components\/schemas\/(\w+)$/.exec(target)?.[1]
    const found = name === undefined ? undefined : this.components[name]
    if (!found) throw new Error(`the API document refers to ${target}, which it does not define`)
    return found
  }

  /** Fails at start-up, not at a request, when the document uses a keyword this validator does not check. */
  checkKeywords(schema: Schema, where: string): void {
    for (const key of Object.keys(schema)) {
      if (!KNOWN.has(key)) throw new Error(`the API document uses "${key}" at ${where}, which the validator does not check`)
    }
    const properties = schema.properties as Record<string, Schema> | undefined
    for (const [name, child] of Object.entries(properties ?? {})) this.checkKeywords(child, `${where}.${name}`)
    if (typeof schema.items === 'object') this.checkKeywords(schema.items as Schema, `${where}[]`)
    if (typeof schema.additionalProperties === 'object') this.checkKeywords(schema.additionalProperties as Schema, `${where}.*`)
  }

  /** The first problem of `value`, or undefined when it is valid. */
  validate(input: Schema, value: unknown, field: string): Invalid | undefined {
    const schema = this.resolve(input)
    const actual = typeOf(value)
    if (schema.type !== undefined) {
      const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string]
      if (!types.some((t) => fits(actual, t))) return { field, message: `${field} must be ${types.map((t) => (t === 'integer' ? 'an integer' : t === 'array' || t === 'object' ? `an ${t}` : `a ${t}`)).join(' or ')}, not ${actual}` }
    }
    if (Array.isArray(schema.enum) && !schema.enum.includes(value)) {
      return { field, message: `${field} must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(', ')}` }
    }
    if (typeof value === 'number') {
      if (typeof schema.minimum === 'number' && value < schema.minimum) return { field, message: `${field} must be at least ${schema.minimum}` }
      if (typeof schema.maximum === 'number' && value > schema.maximum) return { field, message: `${field} must be at most ${schema.maximum}` }
    }
    if (typeof value === 'string') {
      const length = [...value].length
      if (typeof schema.minLength === 'number' && length < schema.minLength) return { field, message: `${field} must have at least ${schema.minLength} character${schema.minLength === 1 ? '' : 's'}` }
      if (typeof schema.maxLength === 'number' && length > schema.maxLength) return { field, message: `${field} must have at most ${schema.maxLength} characters` }
      if (typeof schema.pattern === 'string' && !regex(schema.pattern).test(value)) return { field, message: `${field} must match ${schema.pattern}` }
    }
    if (Array.isArray(value)) {
      if (typeof schema.minItems === 'number' && value.length < schema.minItems) return { field, message: `${field} must have at least ${schema.minItems} item${schema.minItems === 1 ? '' : 's'}` }
      if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) return { field, message: `${field} must have at most ${schema.maxItems} items` }
      if (typeof schema.items === 'object') {
        for (let i = 0; i < value.length; i++) {
          const problem = this.validate(schema.items as Schema, value[i], `${field}[${i}]`)
          if (problem) return problem
        }
      }
    }
    if (actual === 'object') return this.validateObject(schema, value as Record<string, unknown>, field)
    return undefined
  }

  private validateObject(schema: Schema, value: Record<string, unknown>, field: string): Invalid | undefined {
    const keys = Object.keys(value)
    const properties = (schema.properties ?? {}) as Record<string, Schema>
    for (const name of (schema.required ?? []) as string[]) {
      if (!(name in value)) return { field: `${field}.${name}`, message: `${field}.${name} is required` }
    }
    if (typeof schema.minProperties === 'number' && keys.length < schema.minProperties) return { field, message: `${field} must have at least ${schema.minProperties} of ${Object.keys(properties).join(', ')}` }
    if (typeof schema.maxProperties === 'number' && keys.length > schema.maxProperties) return { field, message: `${field} must have at most ${schema.maxProperties} properties` }
    for (const key of keys) {
      const child = Object.hasOwn(properties, key) ? properties[key] : schema.additionalProperties
      if (child === false) {
        const allowed = Object.keys(properties)
        return { field: `${field}.${key}`, message: `${field}.${key} is not a known field (known: ${allowed.join(', ')})` }
      }
      if (typeof child === 'object' && child !== null) {
        const problem = this.validate(child as Schema, value[key], `${field}.${key}`)
        if (problem) return problem
      }
    }
    return undefined
  }

  /** `value` with the defaults of absent properties filled in (one level: what the handlers read). */
  withDefaults(input: Schema, value: Record<string, unknown>): Record<string, unknown> {
    const schema = this.resolve(input)
    const out: Record<string, unknown> = { ...value }
    for (const [name, child] of Object.entries((schema.properties ?? {}) as Record<string, Schema>)) {
      const resolved = this.resolve(child)
      if (out[name] === undefined && resolved.default !== undefined) out[name] = resolved.default
    }
    return out
  }
}

/** A query or path parameter's text as the schema's type, or an Invalid. */
export function coerceParameter(resolver: SchemaResolver, input: Schema, text: string, field: string): { value: unknown } | Invalid {
  const schema = resolver.resolve(input)
  const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string]
  let value: unknown = text
  if (types.includes('integer') || types.includes('number')) {
    if (!/^-?\d+(\.\d+)?$/.test(text)) return { field, message: `${field} must be ${types.includes('integer') ? 'an integer' : 'a number'}, not "${text}"` }
    value = Number(text)
  } else if (types.includes('boolean')) {
    if (text !== 'true' && text !== 'false') return { field, message: `${field} must be true or false, not "${text}"` }
    value = text === 'true'
  }
  const problem = resolver.validate(schema, value, field)
  return problem ?? { value }
}
