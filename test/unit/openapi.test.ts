// Unit: both APIs serve an OpenAPI 3 document generated from their route schemas; it validates, lists every route
// and every error code, and a request built from it works.
import { t } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import SwaggerParser from '@apidevtools/swagger-parser';
import type { FastifyInstance } from 'fastify';
import { validateBalancerConfig } from '@fwlb/config';
import { build, Errors, FirewallHistory, Reconciler, RoutingPort } from '@fwlb/balancer';
import { SlbErrors } from '@fwlb/slb';
import { routesOf } from '@fwlb/service';
import { recordingNft } from '../helpers/recording-nft';
import { setup, TOKEN } from '../helpers/slb-fixture';

async function documentOf(t: any, app: FastifyInstance, codes: string[]) {
  await app.ready();
  const res = await app.inject({ method: 'GET', url: '/openapi.json' });
  t.equal(res.statusCode, 200);
  const doc = res.json();
  await t.resolves(SwaggerParser.validate(JSON.parse(JSON.stringify(doc))), 'the document validates (OpenAPI 3)');
  const listed = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ms]) =>
    Object.keys(ms).map((m) => `${m.toUpperCase()} ${p}`),
  );
  const routes = routesOf(app);
  t.ok(routes.length >= 6, `${routes.length} routes registered`);
  t.same(
    routes.filter((r) => !listed.includes(r)),
    [],
    'every registered route is in it',
  );
  t.same(
    codes.filter((c) => !doc.components.schemas.Error.properties.code.enum.includes(c)),
    [],
    `every error code is in it (${codes.length})`,
  );
  // The reference in docs/api.md names every route of the document: a route added without its line fails here.
  const api = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'api.md'), 'utf8');
  const named = (r: string) => {
    const [method, path] = r.split(' ');
    const line = `\`${method} ${path.replace(/\{([A-Za-z]+)\}/g, ':$1')}`;
    return api.includes(`${line}\``) || api.includes(`${line}?`);
  };
  t.same(
    listed.filter((r) => !named(r)),
    [],
    `docs/api.md names every route of the document (${listed.length})`,
  );
  return doc;
}

t.test('balancer API', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile(), history: new FirewallHistory() });
  const doc = await documentOf(
    t,
    app,
    Object.values(Errors).map((e) => e.code),
  );
  // A request built from the document: the admin route's path template and its body schema.
  const path = Object.keys(doc.paths).find((p) => p.endsWith('/admin'))!;
  const schema = doc.paths[path].put.requestBody.content['application/json'].schema;
  t.same(schema.required, ['enabled']);
  const body = Object.fromEntries(schema.required.map((k: string) => [k, schema.properties[k].type === 'boolean' ? false : null]));
  await r.reconcile();
  const res = await app.inject({ method: 'PUT', url: path.replace('{id}', 'fw2'), payload: body, headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.statusCode, 200, 'a request built from it works');
  t.equal(res.json().enabled, false);
});

t.test('SLB API', async (t) => {
  const { app, s } = setup();
  await s.start();
  await documentOf(
    t,
    app,
    Object.values(SlbErrors).map((e) => e.code),
  );
});
