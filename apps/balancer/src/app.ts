// Builds the node's REST API (fastify); never listens: main.ts does. Shell layer of apps/balancer.
import type { Membership } from './membership';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AuditSink, bearerGuard, createApi, healthRoute, Logger, reloadRoute, statusPage } from '@fwlb/service';
import { canonicalAddress } from '@fwlb/flowhash';
import { Errors } from './errors';
import { switchTime } from './membership';
import type { Reconciler } from './reconciler';
import type { SessionsView } from './session-layer';
import type { Announcer } from './announcer';
import type { ReloadResult } from './reload';
import type { FirewallHistory } from './history';

export interface AppOptions {
  /** This node's firewalls' state (see main.ts); the reconciler's when absent. */
  membership?: Membership;
  reconciler: Reconciler;
  /** Bearer token for mutations; when absent, mutations are refused. */
  token?: string;
  /** Called after an accepted mutation; main.ts applies through the runner, tests may apply directly. */
  apply?: () => Promise<unknown>;
  /** The node's logger: requests are logged through it (see createApi). */
  logger?: boolean | Logger;
  /** The shared session table (layer 3), when configured. */
  sessions?: SessionsView;
  /** Conditions an operator must see (the probe helper down); /health is not `ok` while there are any. */
  alarms?: () => string[];
  /** Where audit records of mutations go. @default one JSON line each on stdout */
  audit?: AuditSink;
  /** Error codes of routes added to this API by others (the embedded SLB's), for the OpenAPI document. */
  extraErrorCodes?: string[];
  /** Persist the admin state after an accepted change (the node's stateFile). */
  saveAdmin?: (admin: Record<string, boolean>) => void;
  /**
   * Share an admin change with the other nodes (through the session table), to take effect at `at` (ms since the
   * epoch); resolves to the time in force.
   */
  shareAdmin?: (id: string, enabled: boolean, at: number) => Promise<number>;
  /** How much later than usual an admin change of `id` should take effect (ms): the sessions it moves, pinned first. */
  switchLead?: (id: string, enabled: boolean) => Promise<number>;
  /** How long an admin change keeps trying to share itself before it is refused (default SHARE_WAIT_MS). */
  shareWaitMs?: number;
  /** The node's BGP announcements, when a bgp section is configured. */
  announcer?: Announcer;
  /** New connections this node has steered so far (SYNs from its side, read fresh): the drain's progress. */
  newConnections?: () => Promise<number>;
  /** Re-read the config file and take it without a restart (see Reloader), or refuse it with a ConfigError. */
  reload?: () => Promise<ReloadResult>;
  /** The firewalls' last minutes (GET /firewalls/history). */
  history?: Pick<FirewallHistory, 'view'>;
  /** Serve HTTPS with this certificate and key (`api.tls`). */
  https?: { cert: Buffer; key: Buffer };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sessionsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    addr: { type: 'string', anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }] },
    port: { type: 'string', pattern: '^[0-9]{1,5}$' },
    firewall: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' },
    limit: { type: 'string', pattern: '^[0-9]{1,6}$' },
  },
} as const;

const drainBody = {
  type: 'object',
  additionalProperties: false,
  required: ['drained'],
  properties: { drained: { type: 'boolean' } },
} as const;

const adminBody = {
  type: 'object',
  additionalProperties: false,
  required: ['enabled'],
  properties: { enabled: { type: 'boolean' } },
} as const;

const adminQuery = {
  type: 'object',
  additionalProperties: false,
  // Query strings arrive as text (the API's ajv does not coerce types).
  properties: { local: { enum: ['true', 'false'] } },
} as const;

/**
 * How long an admin change keeps trying to share itself while Redis does not answer: longer than a Sentinel or
 * Cluster failover (about 2 s in the lab), shorter than an operator's patience.
 */
export const SHARE_WAIT_MS = 6000;
const SHARE_RETRY_MS = 200;

/**
 * Shares an admin change (see AppOptions.shareAdmin), trying again while Redis does not answer, for up to `waitMs`;
 * each try proposes a time `lead` ms from its own moment, so a change shared late still reaches every kernel before
 * its second. Throws the last error when the time runs out.
 */
async function shareWithin(
  share: NonNullable<AppOptions['shareAdmin']>,
  id: string,
  enabled: boolean,
  lead: number,
  waitMs: number,
  closing: () => boolean,
): Promise<number> {
  const end = Date.now() + waitMs;
  for (;;) {
    try {
      return await share(id, enabled, switchTime(Date.now() + lead));
    } catch (e) {
      // A stopping node gives up at once: its close waits for this request, and a node whose controller is stopping
      // applies nothing the others switch to, so the time it lingers is time it forwards on an old table.
      if (closing()) throw new Error(`the node is stopping (${(e as Error).message})`);
      if (Date.now() + SHARE_RETRY_MS > end) throw e;
      await sleep(SHARE_RETRY_MS);
    }
  }
}

export function build(opts: AppOptions): FastifyInstance {
  const app = createApi(
    opts.logger,
    opts.audit,
    {
      title: 'fwlb balancer node',
      errorCodes: [...Object.values(Errors).map((e) => e.code), ...(opts.extraErrorCodes ?? [])],
    },
    opts.https,
  );
  const r = opts.reconciler;
  // The firewalls' state the admin route changes: the node's one Membership (the reconciler's, unless given).
  const membership = opts.membership ?? r.membership;
  const guard = bearerGuard(opts.token);

  const errors: AdminErrors = { save: null, share: null };
  const alarms = () => {
    const panic = membership.snapshot().panic;
    return [...(panic ? [panic] : []), ...(errors.save ? [errors.save] : []), ...(errors.share ? [errors.share] : []), ...(opts.alarms?.() ?? [])];
  };
  healthRoute(app, () => {
    const a = alarms();
    const status: 'ok' | 'degraded' = (r.lastError && !r.last) || a.length ? 'degraded' : 'ok';
    return { status, role: r.config.role, lastError: r.lastError, alarms: a };
  });
  app.get('/status', async () => {
    await r.freshCounters();
    const views = opts.sessions ? await opts.sessions.healthViews() : null;
    return { ...r.status(), views, ...(opts.announcer ? { bgp: opts.announcer.status() } : {}), alarms: alarms() };
  });
  app.get('/firewalls', async () => {
    await r.freshCounters();
    return r.firewalls();
  });
  if (opts.history) {
    const history = opts.history;
    app.get('/firewalls/history', async () => history.view());
  }
  statusPage(app);
  sessionRoutes(app, opts);
  adminRoute(app, opts, membership, guard, errors);
  registerNodeRoutes(app, opts, guard);
  reloadRoute(app, guard, opts.reload);
  return app;
}

/** The session table's records: a query, and the counts (404 without a session table). */
function sessionRoutes(app: FastifyInstance, opts: AppOptions): void {
  app.get<{ Querystring: { addr?: string; port?: string; firewall?: string; limit?: string } }>(
    '/sessions',
    { schema: { querystring: sessionsQuery } },
    async (req) => {
      if (!opts.sessions) throw Errors.NO_SESSION_TABLE();
      const q = req.query;
      // Records hold IPv6 addresses in their canonical form; any spelling of one finds them.
      return opts.sessions.query({
        addr: q.addr ? canonicalAddress(q.addr) : undefined,
        port: q.port ? Number(q.port) : undefined,
        firewall: q.firewall,
        limit: q.limit ? Math.min(Number(q.limit), 10000) : 100,
      });
    },
  );
  app.get('/sessions/count', async () => {
    if (!opts.sessions) throw Errors.NO_SESSION_TABLE();
    return { ...(await opts.sessions.count()), sync: opts.sessions.metrics() };
  });
}

/** Why the last admin change is not in the state file, or not shared with the other nodes: alarms until it is. */
interface AdminErrors {
  save: string | null;
  share: string | null;
}

/**
 * A change's share: the second every node switches at (see shareWithin), 0 without a session table. With
 * ?local=true and Redis away, the change holds here at once and in the state file; an alarm says it was not shared.
 */
async function shareAdmin(opts: AppOptions, errors: AdminErrors, c: { id: string; enabled: boolean; local: boolean; closing: () => boolean }): Promise<number> {
  if (!opts.shareAdmin) return 0;
  // A lead that cannot be estimated (Redis away) is the usual one: the change is not held up by it.
  const lead = opts.switchLead ? await opts.switchLead(c.id, c.enabled).catch(() => 0) : 0;
  try {
    const at = await shareWithin(opts.shareAdmin, c.id, c.enabled, lead, opts.shareWaitMs ?? SHARE_WAIT_MS, c.closing);
    errors.share = null;
    return at;
  } catch (e) {
    if (!c.local) throw Errors.NOT_SHARED(`${c.id}: ${(e as Error).message}`);
    errors.share = `admin change of ${c.id} not shared with the other nodes: ${(e as Error).message}`;
    return 0;
  }
}

/**
 * A firewall's admin state: shared first (for the second every node switches at, later for a change that moves many
 * sessions), then applied here; answered once in force. A change the kernel refused is taken back everywhere.
 */
function adminRoute(app: FastifyInstance, opts: AppOptions, membership: Membership, guard: ReturnType<typeof bearerGuard>, errors: AdminErrors): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.put<{ Params: { id: string }; Body: { enabled: boolean }; Querystring: { local?: 'true' | 'false' } }>(
    '/firewalls/:id/admin',
    {
      preValidation: guard,
      schema: { body: adminBody, querystring: adminQuery },
      config: {
        auditBefore: (req: FastifyRequest) => {
          const id = (req.params as { id: string }).id;
          return membership.has(id) ? { enabled: membership.isEnabled(id) } : undefined;
        },
      },
    },
    async (req) => {
      const { id } = req.params;
      const m = membership;
      if (!m.has(id)) throw Errors.NO_SUCH_FIREWALL(id);
      const before = m.isEnabled(id);
      const enabled = req.body.enabled;
      const at = await shareAdmin(opts, errors, { id, enabled, local: req.query.local === 'true', closing: () => closing });
      m.setAdmin(id, enabled, at);
      try {
        if (opts.apply) {
          await opts.apply();
          // Only a request that changes this node's state: the same change learned from a sibling first was applied then.
          const late = at && before !== enabled ? Date.now() - at : 0;
          if (late > 0) {
            opts.reconciler.switchLate(late);
            req.log.warn(`admin change of ${id} reached this node's kernel ${late} ms after the second every node switches at`);
          }
          // The answer says the change is in force: wait for the switch, then apply the table without it.
          if (at > Date.now()) {
            await sleep(at - Date.now() + 20);
            await opts.apply();
          }
        }
      } catch (e) {
        m.setAdmin(id, before);
        if (opts.shareAdmin && !errors.share) await opts.shareAdmin(id, before, 0).catch(() => undefined);
        throw Errors.APPLY_FAILED(e instanceof Error ? e.message : String(e));
      }
      try {
        opts.saveAdmin?.(m.adminState());
        errors.save = null;
      } catch (e) {
        errors.save = `state file not written: ${(e as Error).message}`;
        throw Errors.SAVE_FAILED(errors.save);
      }
      return opts.reconciler.firewalls().find((f) => f.id === id);
    },
  );
}

/**
 * The node itself in the routing: its announcements' state and BGP sessions, and the drain an operator sets for
 * maintenance (the node stays, less preferred; `newConnections` tells when the routers have left it).
 */
function registerNodeRoutes(app: FastifyInstance, opts: AppOptions, guard: ReturnType<typeof bearerGuard>): void {
  const announcer = () => {
    if (!opts.announcer) throw Errors.NO_BGP();
    return opts.announcer;
  };
  const view = async () => {
    await announcer().refresh();
    return {
      ...announcer().status(),
      newConnections: opts.newConnections ? await opts.newConnections() : null,
      at: Date.now(),
    };
  };
  app.get('/node', view);
  app.put<{ Body: { drained: boolean } }>(
    '/node/drain',
    {
      preValidation: guard,
      schema: { body: drainBody },
      config: { auditBefore: () => (opts.announcer ? { drained: opts.announcer.isDrained() } : undefined) },
    },
    async (req) => {
      await announcer().setDrained(req.body.drained);
      return view();
    },
  );
}
