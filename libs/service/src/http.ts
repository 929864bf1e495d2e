// The parts every fwlb REST API shares: strict body validation, one error shape, the bearer guard and listening; shell layer.
import Fastify, { FastifyInstance, FastifyRequest } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { ConfigError } from '@fwlb/config';
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

/** A fastify instance with fwlb's error shape `{code, message, details}`; bodies are never coerced or stripped. */
export function createApi(logger = false): FastifyInstance {
  // Why removeAdditional false: fastify's default ajv strips unknown keys silently; an operator's typo must be refused.
  const app = Fastify({ logger, bodyLimit: 1 << 20, ajv: { customOptions: { removeAdditional: false, allErrors: true, coerceTypes: false } } });
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
  app.setErrorHandler((err: any, _req, reply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send({ code: err.code, message: err.message, details: err.details });
    if (err instanceof ConfigError) {
      const e = CommonErrors.BAD_REQUEST(err.problems.map((p) => `${p.field || "/"}: ${p.message}`).join('; '), err.problems);
      return reply.status(400).send({ code: e.code, message: e.message, details: err.problems });
    }
    if (err.validation) {
      const fields = err.validation.map((v: any) => ({
        field: v.keyword === 'additionalProperties' ? `${v.instancePath}/${v.params.additionalProperty}` : v.keyword === 'required' ? `${v.instancePath}/${v.params.missingProperty}` : v.instancePath,
        message: v.keyword === 'additionalProperties' ? 'unknown key' : v.message,
      }));
      const e = CommonErrors.BAD_REQUEST(fields.map((f: any) => `${f.field || "/"}: ${f.message}`).join('; '), fields);
      return reply.status(400).send({ code: e.code, message: e.message, details: fields });
    }
    if (err.statusCode && err.statusCode < 500) return reply.status(err.statusCode).send({ code: err.code ?? 'FWLB_BAD_REQUEST', message: err.message });
    // Raw errors (nft, Redis, a bug) go to the log, not to an unauthenticated client.
    _req.log.error(err);
    if (!logger) console.error(`fwlb: internal error on ${_req.method} ${_req.url}: ${err?.stack ?? err}`);
    const e = CommonErrors.INTERNAL();
    return reply.status(500).send({ code: e.code, message: e.message });
  });
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
