import type { IncomingMessage } from 'node:http'
import type { Logger } from '../log.js'
import { errorResult, type ApiRole, type Principal, type Route, type RouteContext, type RouteResult } from '../mgmt/http.js'
import { OPENAPI } from './openapi.js'
import { ApiError, type Operation } from './operations.js'
import { coerceParameter, SchemaResolver, type Invalid, type Schema } from './validate.js'

/*
 * The management API's routes, made from the OpenAPI document: one route per operation, with the
 * path, method and role the document gives, and the operation of the same operationId. Before an
 * operation runs, its path and query parameters and its JSON body are checked against the
 * document (unknown query parameters are refused too: a misspelt filter must not silently list
 * everything), defaults filled in, and any problem answered 400 with the field named.
 */

export const OPENAPI_PATH = '/api/v1/openapi.json'

interface DocParameter {
  readonly name: string
  readonly in: 'query' | 'path'
  readonly required?: boolean
  readonly schema: Schema
}

interface DocOperation {
  readonly operationId: string
  readonly 'x-role': ApiRole
  readonly parameters?: readonly DocParameter[]
  readonly requestBody?: { readonly content: { readonly 'application/json': { readonly schema: Schema } } }
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const

const badRequest = (problem: Invalid): RouteResult => errorResult(400, 'BAD_REQUEST', problem.message, problem.field)

function parseBody(body: Buffer): { value: unknown } | Invalid {
  if (body.length === 0) return { field: 'body', message: 'the request has no body; send JSON with Content-Type: application/json' }
  try {
    return { value: JSON.parse(body.toString('utf8')) }
  } catch (err) {
    return { field: 'body', message: `the body is not JSON (${(err as Error).message})` }
  }
}

export function apiRoutes(operations: Readonly<Record<string, Operation>>, log: Logger): Route[] {
  const resolver = new SchemaResolver(OPENAPI.components.schemas as unknown as Record<string, Schema>)
  const routes: Route[] = [{ method: 'GET', path: OPENAPI_PATH, public: true, handle: () => ({ status: 200, body: OPENAPI }) }]
  for (const [path, item] of Object.entries(OPENAPI.paths)) {
    for (const method of METHODS) {
      const operation = (item as Record<string, DocOperation | undefined>)[method]
      if (!operation) continue
      const run = operations[operation.operationId]
      if (!run) throw new Error(`the API document's operation ${operation.operationId} has no implementation`)
      const parameters = operation.parameters ?? []
      for (const parameter of parameters) resolver.checkKeywords(parameter.schema, `${operation.operationId} ${parameter.name}`)
      const bodySchema = operation.requestBody?.content['application/json'].schema
      const known = new Set(parameters.filter((p) => p.in === 'query').map((p) => p.name))

      const handle = async (_req: IncomingMessage, raw: Buffer, context: RouteContext): Promise<RouteResult> => {
        const params: Record<string, unknown> = {}
        const query: Record<string, unknown> = {}
        for (const name of context.query.keys()) {
          if (!known.has(name)) return badRequest({ field: `query.${name}`, message: `query.${name} is not a parameter of ${method.toUpperCase()} ${path}${known.size ? ` (it takes ${[...known].join(', ')})` : ''}` })
          if (context.query.getAll(name).length > 1) return badRequest({ field: `query.${name}`, message: `query.${name} is given more than once` })
        }
        for (const parameter of parameters) {
          const text = parameter.in === 'path' ? context.params[parameter.name] : context.query.get(parameter.name) ?? undefined
          const target = parameter.in === 'path' ? params : query
          if (text === undefined) {
            const fallback = resolver.resolve(parameter.schema).default
            if (fallback !== undefined) target[parameter.name] = fallback
            continue
          }
          const coerced = coerceParameter(resolver, parameter.schema, text, `${parameter.in}.${parameter.name}`)
          if (!('value' in coerced)) return badRequest(coerced)
          target[parameter.name] = coerced.value
        }
        let body: Record<string, unknown> = {}
        if (bodySchema) {
          const parsed = parseBody(raw)
          if (!('value' in parsed)) return badRequest(parsed)
          const problem = resolver.validate(bodySchema, parsed.value, 'body')
          if (problem) return badRequest(problem)
          body = resolver.withDefaults(bodySchema, parsed.value as Record<string, unknown>)
        } else if (raw.length > 0) {
          return badRequest({ field: 'body', message: `${method.toUpperCase()} ${path} takes no body` })
        }
        try {
          return await run({ params, query, body, principal: context.principal as Principal })
        } catch (err) {
          if (err instanceof ApiError) {
            // The server logs a 503 as a warning and adds Retry-After (mgmt/http.ts).
            if (err.status === 503) throw Object.assign(new Error(err.message), { statusCode: 503 })
            if (err.status >= 500) log.warn({ path, status: err.status }, `management API: ${err.message}`)
            return errorResult(err.status, err.code, err.message, err.field)
          }
          throw err
        }
      }
      routes.push({ method: method.toUpperCase() as Route['method'], path, role: operation['x-role'], handle })
    }
  }
  return routes
}
