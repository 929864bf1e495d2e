// The SLB tier's REST API (fastify): /vips and /vips/:id/members CRUD; never listens: main.ts does. Shell layer of libs/slb.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ConfigError, memberKey, memberKeyOf, memberPatchSchema, memberSchema, MemberConfig } from '@fwlb/config';
import { hostPort } from '@fwlb/flowhash';
import { AuditSink, bearerGuard, createApi, healthRoute, Logger, reloadRoute, statusPage } from '@fwlb/service';
import { SlbErrors } from './errors';
import { SlbService } from './service';
import { NotFoundError } from './vip-plan';
import { SaveError } from './group-commit';

export interface SlbAppOptions {
  service: SlbService;
  /** Bearer token for mutations; when absent, mutations are refused. */
  token?: string;
  /** The node's logger: requests are logged through it (see createApi). */
  logger?: boolean | Logger;
  /** Where audit records of mutations go. @default one JSON line each on stdout */
  audit?: AuditSink;
  /** Serve HTTPS with this certificate and key (`api.tls`). */
  https?: { cert: Buffer; key: Buffer };
  /** Re-read the config file (see RunningSlb.reload); a ConfigError is a refusal. */
  reload?: () => Promise<unknown>;
}

/** Add the SLB routes to an existing fastify instance (the inside node embeds them), or to a new one. */
export function registerSlbRoutes(app: FastifyInstance, s: SlbService, token?: string): void {
  const guard = bearerGuard(token);
  // Kernel failures and lookups become registry errors; validation problems stay ConfigErrors (400 naming the field).
  const wrap = async <T>(f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      if (e instanceof NotFoundError) throw (e.what === 'vip' ? SlbErrors.NO_SUCH_VIP : SlbErrors.NO_SUCH_MEMBER)(e.message);
      if (e instanceof SaveError) throw SlbErrors.SAVE_FAILED(e.message);
      throw SlbErrors.APPLY_FAILED(e instanceof Error ? e.message : String(e));
    }
  };
  type Id = { Params: { id: string } };
  type Member = { Params: { id: string; member: string } };
  // The audit record's `before`: the VIP, or the member, as it was.
  const vipBefore = { auditBefore: (req: FastifyRequest) => s.vip((req.params as { id: string }).id) };
  const memberBefore = {
    auditBefore: (req: FastifyRequest) => {
      const p = req.params as { id: string; member: string };
      return s.vip(p.id).members.find((m) => memberKey(m) === memberKeyOf(p.member));
    },
  };

  // Reads answer from memory: counters come from the background refresh (see SlbService.refreshCounters).
  app.get('/vips', async (_req, reply) => reply.type('application/json; charset=utf-8').send(s.views.vipsBody()));
  app.get<Id>('/vips/:id', async (req) => {
    return wrap(async () => s.views.vipView(s.vip(req.params.id)));
  });
  // VIP bodies are validated by libs/config (schema plus overlap and duplicate checks) so that one place names the field.
  app.post('/vips', { preValidation: guard }, async (req, reply) => {
    const v = await wrap(() => s.createVip(req.body));
    return reply.status(201).send(s.views.vipView(v));
  });
  app.put<Id>('/vips/:id', { preValidation: guard, config: vipBefore }, async (req) =>
    s.views.vipView(await wrap(() => s.replaceVip(req.params.id, req.body))),
  );
  app.delete<Id>('/vips/:id', { preValidation: guard, config: vipBefore }, async (req, reply) => {
    await wrap(() => s.deleteVip(req.params.id));
    return reply.status(204).send();
  });
  app.get<Id>('/vips/:id/members', async (req) => {
    return wrap(async () => s.views.memberView(s.vip(req.params.id)));
  });
  app.post<Id & { Body: MemberConfig }>(
    '/vips/:id/members',
    { preValidation: guard, schema: { body: memberSchema }, config: vipBefore },
    async (req, reply) => {
      const v = await wrap(() => s.addMember(req.params.id, req.body));
      return reply.status(201).send(s.views.memberView(v).find((m) => memberKey(m) === memberKeyOf(hostPort(req.body.address, req.body.port))));
    },
  );
  app.patch<Member & { Body: Partial<Pick<MemberConfig, 'weight' | 'state'>> }>(
    '/vips/:id/members/:member',
    { preValidation: guard, schema: { body: memberPatchSchema }, config: memberBefore },
    async (req) => {
      const v = await wrap(() => s.patchMember(req.params.id, req.params.member, req.body));
      return s.views.memberView(v).find((m) => memberKey(m) === memberKeyOf(req.params.member));
    },
  );
  app.delete<Member>('/vips/:id/members/:member', { preValidation: guard, config: memberBefore }, async (req, reply) => {
    await wrap(() => s.deleteMember(req.params.id, req.params.member));
    return reply.status(204).send();
  });
}

export function buildSlbApp(o: SlbAppOptions): FastifyInstance {
  const app = createApi(o.logger, o.audit, { title: 'fwlb SLB tier', errorCodes: Object.values(SlbErrors).map((e) => e.code) }, o.https);
  healthRoute(app, () => {
    const alarms = o.service.alarms();
    const status: 'ok' | 'degraded' = o.service.lastError || alarms.length ? 'degraded' : 'ok';
    return { status, lastError: o.service.lastError, alarms };
  });
  app.get('/status', async () => o.service.status());
  statusPage(app);
  registerSlbRoutes(app, o.service, o.token);
  reloadRoute(app, bearerGuard(o.token), o.reload);
  return app;
}
