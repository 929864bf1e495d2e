// Builds the node's REST API (fastify); never listens: main.ts does. Shell layer of apps/balancer.
import Fastify, { FastifyInstance, FastifyRequest } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { ApiError, Errors } from './errors';
import type { Reconciler } from './reconciler';

export interface AppOptions {
  reconciler: Reconciler;
  /** Bearer token for mutations; when absent, mutations are refused. */
  token?: string;
  /** Called after an accepted mutation; main.ts applies through the runner, tests may apply directly. */
  apply?: () => Promise<unknown>;
  logger?: boolean;
}

const adminBody = {
  type: 'object',
  additionalProperties: false,
  required: ['enabled'],
  properties: { enabled: { type: 'boolean' } },
} as const;

function authorized(req: FastifyRequest, token?: string): boolean {
  if (!token) return false;
  const h = req.headers.authorization ?? '';
  const m = /^Bearer (.+)$/.exec(h);
  if (!m) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function build(opts: AppOptions): FastifyInstance {
  // Why removeAdditional false: fastify's default ajv strips unknown keys silently; an operator's typo must be refused.
  const app = Fastify({ logger: opts.logger ?? false, ajv: { customOptions: { removeAdditional: false, allErrors: true, coerceTypes: false } } });
  const r = opts.reconciler;

  app.setErrorHandler((err: any, _req, reply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send({ code: err.code, message: err.message, details: err.details });
    if (err.validation) {
      const fields = err.validation.map((v: any) => ({
        field: v.keyword === 'additionalProperties' ? `${v.instancePath}/${v.params.additionalProperty}` : v.keyword === 'required' ? `${v.instancePath}/${v.params.missingProperty}` : v.instancePath,
        message: v.keyword === 'additionalProperties' ? 'unknown key' : v.message,
      }));
      const e = Errors.BAD_REQUEST(fields.map((f: any) => `${f.field || '/'} ${f.message}`).join('; '), fields);
      return reply.status(400).send({ code: e.code, message: e.message, details: fields });
    }
    if (err.statusCode && err.statusCode < 500) return reply.status(err.statusCode).send({ code: err.code ?? 'FWLB_BAD_REQUEST', message: err.message });
    return reply.status(500).send({ code: 'FWLB_INTERNAL', message: err.message });
  });
  app.setNotFoundHandler((_req, reply) => reply.status(404).send({ code: Errors.NOT_FOUND.code, message: Errors.NOT_FOUND.message }));

  const guard = async (req: FastifyRequest) => {
    if (!authorized(req, opts.token)) throw Errors.UNAUTHORIZED();
  };

  app.get('/health', async () => ({ status: r.lastError && !r.last ? 'degraded' : 'ok', role: r.config.role, lastError: r.lastError }));
  app.get('/status', async () => r.status());
  app.get('/firewalls', async () => r.status().firewalls);
  app.put<{ Params: { id: string }; Body: { enabled: boolean } }>(
    '/firewalls/:id/admin',
    { preValidation: guard, schema: { body: adminBody } },
    async (req) => {
      const { id } = req.params;
      if (!r.hasFirewall(id)) throw Errors.NO_SUCH_FIREWALL(id);
      const before = r.status().firewalls.find((f) => f.id === id)!.enabled;
      r.setAdmin(id, req.body.enabled);
      try {
        if (opts.apply) await opts.apply();
      } catch (e) {
        r.setAdmin(id, before);
        throw Errors.APPLY_FAILED(e instanceof Error ? e.message : String(e));
      }
      return r.status().firewalls.find((f) => f.id === id);
    },
  );
  return app;
}
