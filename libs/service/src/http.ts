// The parts every fwlb REST API shares: strict body validation, one error shape, the bearer guard and listening; shell layer.
import type { Logger } from './log';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest, LogController } from 'fastify';
import { openApiDocument, RouteDoc } from './openapi';
import { createHash, timingSafeEqual } from 'node:crypto';
import { appendFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { ADDRESS_FORMATS, ConfigError } from '@fwlb/config';
import { ApiError, CommonErrors } from './api-error';

export function authorized(req: FastifyRequest, token?: string): boolean {
  if (!token) return false;
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A preValidation hook that refuses requests without the bearer token; with no token configured, it refuses all. */
export function bearerGuard(token?: string) {
  return async (req: FastifyRequest) => {
    if (!authorized(req, token)) throw CommonErrors.UNAUTHORIZED();
    (req as { fwlbAuthorized?: boolean }).fwlbAuthorized = true;
  };
}

/** The deepest nesting a request body may have; fwlb's bodies need 4 levels. */
export const MAX_BODY_DEPTH = 32;

/** Nesting depth of a parsed JSON value, counted without recursion (a hostile body may nest 100,000 levels). */
export function jsonDepth(v: unknown, limit = Infinity): number {
  let max = 0;
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (max > limit) return max;
    for (const c of Object.values(x as object)) stack.push([c, depth]);
  }
  return max;
}

/** One audit record per mutation, accepted or refused. */
export interface AuditRecord {
  audit: true;
  /** Set when the record could not go to $FWLB_AUDIT_LOG and went to standard output instead: why. */
  auditLogError?: string;
  at: string;
  method: string;
  route: string;
  url: string;
  /** Who: `token:<8 hex of the token's sha256>` when the bearer token was right, else `anonymous`; and the peer. */
  actor: string;
  peer: string;
  status: number;
  /** The error code of a refused request. */
  code?: string;
  /** The request body (at most 2 KiB of its JSON). */
  body?: unknown;
  /** What the route changed, as it was before (routes that say so with `auditBefore`), and the answer after (2xx). */
  before?: unknown;
  after?: unknown;
  ms: number;
}

/**
 * Route option: `config: { auditBefore: (req) => state }` records the state a mutation is about to change, for its
 * audit record. It runs after validation and authorization, before the handler; a throw records nothing.
 */
export type AuditBefore = (req: FastifyRequest) => unknown;

const AUDIT_MAX = 2048;
/** A value as it goes into an audit record: itself up to 2 KiB of JSON, else the first 2 KiB of its JSON text. */
const capped = (v: unknown): unknown => {
  const text = JSON.stringify(v);
  return text === undefined || text.length <= AUDIT_MAX ? v : `${text.slice(0, AUDIT_MAX)}…`;
};

/** Where audit records go: one JSON line each on stdout by default (ship it with the rest of the log). */
export type AuditSink = (r: AuditRecord) => void;
export const stdoutAudit: AuditSink = (r) => process.stdout.write(JSON.stringify(r) + '\n');

/**
 * Where audit records go: the file named by $FWLB_AUDIT_LOG (appended, one JSON line each; the audit trail apart from
 * the log, for its own retention), else standard output with the log. Appended synchronously: a mutation's 2xx is
 * sent after its record is written.
 */
export function auditSink(path = process.env.FWLB_AUDIT_LOG): AuditSink {
  if (!path) return stdoutAudit;
  return (r) => {
    try {
      appendFileSync(path, JSON.stringify(r) + '\n', { mode: 0o640 });
    } catch (e) {
      // Never lost, never a failed request: the record goes to standard output, with why.
      stdoutAudit({ ...r, auditLogError: `${path}: ${(e as Error).message}` });
    }
  };
}

function actorOf(req: FastifyRequest): string {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  return m && (req as { fwlbAuthorized?: boolean }).fwlbAuthorized ? `token:${createHash('sha256').update(m[1]).digest('hex').slice(0, 8)}` : 'anonymous';
}

/** A fastify instance with fwlb's error shape `{code, message, details}`; bodies are never coerced or stripped. */
export interface ApiDoc {
  title: string;
  /** Every error code the API may answer with (its registry), listed in the document. */
  errorCodes: string[];
}

const registered = new WeakMap<FastifyInstance, string[]>();

/** The routes an API registered ("PUT /firewalls/{id}/admin"), for checks against its OpenAPI document. */
export function routesOf(app: FastifyInstance): string[] {
  return registered.get(app) ?? [];
}

/**
 * Every error as the API's own: its code and message; a config problem or a schema violation as a 400 with the
 * fields; anything else (nft, Redis, a bug) as a bare 500 whose detail goes to the log, never to the client.
 */
function errorHandler(logged: boolean) {
  return (err: any, _req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send({ code: err.code, message: err.message, details: err.details });
    if (err instanceof ConfigError) {
      const e = CommonErrors.BAD_REQUEST(err.problems.map((p) => `${p.field || '/'}: ${p.message}`).join('; '), err.problems);
      return reply.status(400).send({ code: e.code, message: e.message, details: err.problems });
    }
    if (err.validation) {
      const fields = err.validation.map((v: any) => ({
        field:
          v.keyword === 'additionalProperties'
            ? `${v.instancePath}/${v.params.additionalProperty}`
            : v.keyword === 'required'
              ? `${v.instancePath}/${v.params.missingProperty}`
              : v.instancePath,
        message: v.keyword === 'additionalProperties' ? 'unknown key' : v.message,
      }));
      const e = CommonErrors.BAD_REQUEST(fields.map((f: any) => `${f.field || '/'}: ${f.message}`).join('; '), fields);
      return reply.status(400).send({ code: e.code, message: e.message, details: fields });
    }
    if (err.statusCode && err.statusCode < 500) return reply.status(err.statusCode).send({ code: err.code ?? 'FWLB_BAD_REQUEST', message: err.message });
    // Raw errors (nft, Redis, a bug) go to the log, not to an unauthenticated client.
    _req.log.error(err);
    if (!logged) console.error(`fwlb: internal error on ${_req.method} ${_req.url}: ${err?.stack ?? err}`);
    const e = CommonErrors.INTERNAL();
    return reply.status(500).send({ code: e.code, message: e.message });
  };
}

/** Every mutation, accepted or refused, leaves an audit record: who, what, before and after, the result. */
function auditHooks(app: FastifyInstance, audit: AuditSink): void {
  app.addHook('preHandler', async (req) => {
    const f = (req.routeOptions?.config as { auditBefore?: AuditBefore } | undefined)?.auditBefore;
    if (!f || req.method === 'GET') return;
    try {
      (req as { fwlbBefore?: unknown }).fwlbBefore = f(req);
    } catch {
      /* nothing to record: the handler answers 404 */
    }
  });
  app.addHook('onSend', async (req, reply, payload) => {
    if (req.method === 'GET' || req.method === 'HEAD') return payload;
    let code: string | undefined;
    if (reply.statusCode >= 400 && typeof payload === 'string') {
      try {
        code = JSON.parse(payload).code;
      } catch {
        /* not JSON */
      }
    }
    let after: unknown;
    if (reply.statusCode < 300 && typeof payload === 'string' && payload) {
      try {
        after = JSON.parse(payload);
      } catch {
        /* not JSON */
      }
    }
    const before = (req as { fwlbBefore?: unknown }).fwlbBefore;
    audit({
      audit: true,
      at: new Date().toISOString(),
      method: req.method,
      route: req.routeOptions?.url ?? req.url,
      url: req.url,
      actor: actorOf(req),
      peer: req.socket?.remoteAddress ?? 'unix',
      status: reply.statusCode,
      ...(code ? { code } : {}),
      ...(req.body !== undefined ? { body: capped(req.body) } : {}),
      ...(before !== undefined ? { before: capped(before) } : {}),
      ...(after !== undefined ? { after: capped(after) } : {}),
      ms: Math.round(reply.elapsedTime * 10) / 10,
    });
    return payload;
  });
}

/**
 * `logger`: the node's pino logger (every request is logged, one line at info when it completes: method, url,
 * status, ms; FWLB_LOG_LEVEL=warn turns it off), true for fastify's own, or false for none (the unit tests).
 */
export function createApi(
  logger: boolean | Logger = false,
  audit: AuditSink = auditSink(),
  doc?: ApiDoc,
  https?: { cert: Buffer; key: Buffer },
): FastifyInstance {
  // Why removeAdditional false: fastify's default ajv strips unknown keys silently; an operator's typo must be refused.
  const ajv = { customOptions: { removeAdditional: false, allErrors: true, coerceTypes: false, formats: ADDRESS_FORMATS } };
  const tls = https ? { https } : {};
  const app = (typeof logger === 'object'
    ? Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 1 << 20, ajv, ...tls })
    : Fastify({ logger, bodyLimit: 1 << 20, ajv, ...tls })) as unknown as FastifyInstance;
  if (typeof logger === 'object') {
    // One line per request instead of fastify's two (incoming, completed).
    app.addHook('onResponse', async (req, reply) => {
      req.log.info({ method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 100) / 100 }, 'request');
    });
  }
  // Why a parser of our own: validators and config code walk bodies recursively; a body nested thousands of levels
  // deep would overflow the stack in them (a 500) instead of being refused up front (a 400).
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    let v: unknown;
    try {
      v = JSON.parse(body as string);
    } catch (e) {
      return done(CommonErrors.BAD_REQUEST(`body is not JSON: ${(e as Error).message}`), undefined);
    }
    if (jsonDepth(v, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) return done(CommonErrors.BAD_REQUEST(`body is nested deeper than ${MAX_BODY_DEPTH} levels`), undefined);
    done(null, v);
  });
  app.setErrorHandler(errorHandler(!!logger));
  const routes: string[] = [];
  const docs: RouteDoc[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (r) => {
    const schema = r.schema as RouteDoc['schema'];
    if ((r.config as { undocumented?: boolean } | undefined)?.undocumented) return;
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) {
      if (m === 'HEAD') continue;
      routes.push(`${m} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`);
      docs.push({ method: m, url: r.url, schema });
    }
  });
  if (doc) {
    // OpenAPI 3 built from the same route schemas that validate the requests. Why not @fastify/swagger: it learns
    // the routes from a plugin that loads after build() has registered them synchronously, and saw none.
    app.get('/openapi.json', { config: { undocumented: true } }, async () => openApiDocument(doc, docs));
  }
  auditHooks(app, audit);
  app.setNotFoundHandler((_req, reply) => reply.status(404).send({ code: CommonErrors.NOT_FOUND.code, message: CommonErrors.NOT_FOUND.message }));
  return app;
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Listen on "host:port", "[v6]:port" or "unix:/path" (a stale socket file is replaced). */
export async function listenOn(app: FastifyInstance, listen: string): Promise<void> {
  if (listen.startsWith('unix:')) {
    const p = listen.slice(5);
    // A stale socket file is replaced; a live one (another process answers on it) is not taken away.
    if (await answers(p)) throw new ConfigError([{ field: '/api/listen', message: `another process is listening on ${p}` }], 'api');
    rmSync(p, { force: true });
    await app.listen({ path: p });
  } else {
    const i = listen.lastIndexOf(':');
    await app.listen({ host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) });
  }
}

/**
 * `POST /reload` (bearer), the same on every node process: re-read the config file with `reload`; a ConfigError is
 * the refusal (`FWLB_RELOAD_REFUSED` 422, each field in `details`), and the process keeps the config it had.
 */
export function reloadRoute(app: FastifyInstance, guard: ReturnType<typeof bearerGuard>, reload?: () => Promise<unknown>): void {
  app.post('/reload', { preValidation: guard }, async () => {
    if (!reload) throw CommonErrors.NO_RELOAD();
    try {
      return await reload();
    } catch (e) {
      if (e instanceof ConfigError) throw CommonErrors.RELOAD_REFUSED(e.message, e.problems);
      throw e;
    }
  });
}

const healthQuery = {
  type: 'object',
  additionalProperties: false,
  // Query strings arrive as text (the API's ajv does not coerce types).
  properties: { strict: { enum: ['true', 'false'] } },
} as const;

/**
 * `GET /health`, the same on every node process: 200 with the status in the body, as monitoring expects; with
 * `?strict=true`, 503 unless ok, for checks that read only the status code (keepalived's track_script with curl).
 */
export function healthRoute<T extends { status: 'ok' | 'degraded' }>(app: FastifyInstance, health: () => T): void {
  app.get<{ Querystring: { strict?: 'true' | 'false' } }>('/health', { schema: { querystring: healthQuery } }, async (req, reply) => {
    const h = health();
    if (req.query.strict === 'true' && h.status !== 'ok') reply.code(503);
    return h;
  });
}
