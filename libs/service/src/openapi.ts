// The OpenAPI 3 document of an fwlb API, built from the schemas its routes validate with; pure layer of libs/service.

export interface RouteDoc {
  method: string;
  /** fastify's path, with `:param` segments. */
  url: string;
  schema?: { body?: object; querystring?: { properties?: Record<string, object>; required?: string[] }; params?: object };
}

export interface OpenApiInfo {
  title: string;
  /** Every error code the API may answer with. */
  errorCodes: string[];
}

const READS = new Set(['GET', 'HEAD']);

export function openApiDocument(info: OpenApiInfo, routes: readonly RouteDoc[]): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const params = [...r.url.matchAll(/:([A-Za-z]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const q = r.schema?.querystring;
    const query = Object.entries(q?.properties ?? {}).map(([name, schema]) => ({ name, in: 'query', required: q?.required?.includes(name) ?? false, schema }));
    const mutation = !READS.has(r.method);
    const op: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      ...(params.length || query.length ? { parameters: [...params, ...query] } : {}),
      ...(r.schema?.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: r.schema.body } } } }
        : mutation && r.method !== 'DELETE'
          ? { requestBody: { required: true, content: { 'application/json': { schema: { type: 'object' } } } } }
          : {}),
      ...(mutation ? { security: [{ bearer: [] }] } : {}),
      responses: {
        [r.method === 'DELETE' ? '204' : r.method === 'POST' ? '201' : '200']: { description: 'done' },
        default: { description: 'an error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
    (paths[path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.0.3',
    info: { title: info.title, version: '0.1.0', description: 'Mutations need `Authorization: Bearer <token>`. Errors are `{code, message, details}`.' },
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: { code: { type: 'string', enum: [...new Set(info.errorCodes)].sort() }, message: { type: 'string' }, details: {} },
        },
      },
    },
  };
}
