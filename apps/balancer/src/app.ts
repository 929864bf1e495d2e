// Builds the node's REST API (fastify); never listens: main.ts does. Shell layer of apps/balancer.
import type { FastifyInstance } from 'fastify';
import { bearerGuard, createApi } from '@fwlb/service';
import { Errors } from './errors';
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

export function build(opts: AppOptions): FastifyInstance {
  const app = createApi(opts.logger);
  const r = opts.reconciler;
  const guard = bearerGuard(opts.token);

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
