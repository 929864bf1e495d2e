// Unit (property): 10,000 generated requests against every mutating route of both APIs, authorized: never a 5xx,
// never a crash, and a refused request leaves the (fake) kernel, the addresses and the state as they were.
import { t } from 'tap';
import fc from 'fast-check';
import { validateBalancerConfig } from '@fwlb/config';
import { build, Reconciler, RoutingPort } from '@fwlb/balancer';
import { recordingNft } from '../helpers/recording-nft';
import { setup, TOKEN, web } from '../helpers/slb-fixture';

const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

/** Bodies near the valid ones (so validation goes deep) and anything at all (so it fails early), mixed. */
const ip = fc.oneof(fc.constantFrom('203.0.113.100', '10.20.0.11', '10.20.0.12', '203.0.113.7'), fc.ipV4(), fc.string());
const port = fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constant(80), fc.constant(8080), fc.string());
const member = fc.record(
  { address: ip, port, weight: fc.oneof(fc.integer({ min: -1, max: 200 }), fc.string()), state: fc.oneof(fc.constantFrom('enabled', 'drain'), fc.string()) },
  { requiredKeys: [] },
);
const check = fc.oneof(
  fc.record(
    {
      kind: fc.constantFrom('icmp', 'tcp', 'tcp-half-open', 'http', 'http-content', 'smtp'),
      port,
      path: fc.string(),
      regex: fc.oneof(fc.constantFrom('(', '(a+)+$', 'ok', '[', '\\'), fc.string()),
      contains: fc.string(),
      expect: fc.array(fc.integer({ min: 0, max: 700 })),
    },
    { requiredKeys: [] },
  ),
  fc.jsonValue(),
);
const timers = fc.record(
  {
    interval: fc.oneof(fc.integer({ min: -1, max: 2 ** 32 }), fc.double()),
    response: fc.integer({ min: -1, max: 5000 }),
    retries: fc.integer({ min: -1, max: 5000 }),
    rise: fc.integer({ min: -1, max: 5 }),
  },
  { requiredKeys: [] },
);
const vip = fc.record(
  {
    id: fc.oneof(fc.constantFrom('web', 'v1', 'v2'), fc.string()),
    address: ip,
    port,
    protocol: fc.oneof(fc.constantFrom('tcp', 'udp'), fc.string()),
    scheduler: fc.oneof(fc.constantFrom('rr', 'sh', 'wlc'), fc.string()),
    check,
    timers,
    members: fc.oneof(fc.array(member, { maxLength: 4 }), fc.jsonValue()),
    extra: fc.jsonValue(),
  },
  { requiredKeys: [] },
);
const valid = fc.oneof(
  fc.record({
    ...Object.fromEntries(Object.entries(web()).map(([k, v]) => [k, fc.constant(v)])),
    id: fc.constantFrom('v1', 'v2'),
    address: fc.constantFrom('203.0.113.7', '203.0.113.8'),
    port: fc.integer({ min: 1, max: 65535 }),
  }),
  fc.record({ address: fc.constantFrom('10.20.0.13', '10.20.0.14'), port: fc.constantFrom(8080, 9090) }),
  fc.record({ state: fc.constantFrom('enabled', 'drain'), weight: fc.integer({ min: 1, max: 100 }) }, { requiredKeys: [] }),
  fc.record({ enabled: fc.boolean() }),
);
const body = fc.oneof(valid, vip, member, fc.jsonValue(), fc.record({ enabled: fc.oneof(fc.boolean(), fc.jsonValue()) }, { requiredKeys: [] }));
const segment = fc.oneof(
  fc.constantFrom('web', 'v1', 'fw1', 'fw9', '10.20.0.11:8080', '10.20.0.12:8080', '1.2.3.4:0'),
  fc.string({ maxLength: 12 }).map(encodeURIComponent),
);

t.test('SLB routes: 0 5xx; refused requests change nothing', async (t) => {
  const { s, app, nft, addresses } = setup();
  await s.start();
  const routes = [
    (b: string) => ({ method: 'POST' as const, url: '/vips', payload: b }),
    (b: string, id: string) => ({ method: 'PUT' as const, url: `/vips/${id}`, payload: b }),
    (b: string, id: string) => ({ method: 'POST' as const, url: `/vips/${id}/members`, payload: b }),
    (b: string, id: string, m: string) => ({ method: 'PATCH' as const, url: `/vips/${id}/members/${m}`, payload: b }),
    (_b: string, id: string, m: string) => ({ method: 'DELETE' as const, url: `/vips/${id}/members/${m}` }),
    (_b: string, id: string) => ({ method: 'DELETE' as const, url: `/vips/${id}` }),
  ];
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: routes.length - 1 }), body, segment, segment, async (r, b, id, m) => {
      const before = { batches: nft.batches.length, addrs: [...addresses.addrs].sort().join(), vips: JSON.stringify(s.vips()) };
      const req = routes[r](JSON.stringify(b) ?? 'null', id, m);
      const res = await app.inject({ ...req, headers: auth });
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      if (res.statusCode >= 500) return false;
      if (res.statusCode >= 400) {
        const after = { batches: nft.batches.length, addrs: [...addresses.addrs].sort().join(), vips: JSON.stringify(s.vips()) };
        if (JSON.stringify(after) !== JSON.stringify(before)) return false;
      }
      // Keep the state small and known: put `web` back when a request removed or changed it.
      if (res.statusCode < 400 && s.vips().length > 3) await app.inject({ method: 'DELETE', url: `/vips/${s.vips()[3].id}`, headers: auth });
      return true;
    }),
    { numRuns: 7000, seed: 20261125 },
  );
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.ok((statuses.get(201) ?? 0) + (statuses.get(200) ?? 0) + (statuses.get(204) ?? 0) > 0, 'some requests were accepted (the generator reaches valid bodies)');
  t.notOk(
    [...statuses.keys()].some((k) => k >= 500),
    'no 5xx',
  );
});

t.test('balancer routes: 0 5xx; refused requests change nothing', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const nft = recordingNft();
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, nft, routing);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile() });
  await r.reconcile();
  const statuses = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(body, segment, fc.string({ maxLength: 40 }), async (b, id, q) => {
      const before = { batches: nft.batches.length, fw: JSON.stringify(r.firewalls().map((f) => f.enabled)) };
      const put = await app.inject({ method: 'PUT', url: `/firewalls/${id}/admin`, payload: JSON.stringify(b) ?? 'null', headers: auth });
      const get = await app.inject({ method: 'GET', url: `/sessions?${q}` });
      for (const res of [put, get]) statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      if (put.statusCode >= 500 || get.statusCode >= 500) return false;
      if (
        put.statusCode >= 400 &&
        JSON.stringify({ batches: nft.batches.length, fw: JSON.stringify(r.firewalls().map((f) => f.enabled)) }) !== JSON.stringify(before)
      )
        return false;
      return true;
    }),
    { numRuns: 3000, seed: 20261125 },
  );
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.notOk(
    [...statuses.keys()].some((k) => k >= 500),
    'no 5xx',
  );
});
