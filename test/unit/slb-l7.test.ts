// Unit: L7 VIPs: their validation, the HAProxy rendering (rule regexes over the match key, servers, runtime commands),
// and the SLB service driving a fake L7 engine (what a change, a health event and a failure do).
import { t } from 'tap';
import { ConfigError, isL7, validateSlbConfig, validateVip, ruleCovers, ResolvedL7Vip } from '@fwlb/config';
import { HealthEvent } from '@fwlb/health';
import {
  cliArg,
  escapeRegex,
  haproxyCli,
  healthKey,
  headerSlots,
  L7Engine,
  L7Want,
  mapsChanged,
  parseStat,
  parseTable,
  renderL7,
  ruleId,
  ruleKey,
  serverCommands,
  SlbService,
} from '@fwlb/slb';
import { l7Vip } from '@fwlb/lab';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeSlbKernel } from '../helpers/fake-slb-kernel';

/** The lab's L7 VIP (deploy/lab/src/topology.ts) as a request body: two pools, four rules, three members. */
const shop = (): any => JSON.parse(JSON.stringify(l7Vip(['10.20.0.11', '10.20.0.12', '10.20.0.13'])));

const fields = (f: () => unknown): string[] => {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => p.field);
    throw e;
  }
  return [];
};

t.test('an L7 VIP resolves with its defaults; an L4 VIP carries none of its fields', async (t) => {
  const v = validateVip(shop(), []);
  t.ok(isL7(v));
  const l7 = v as ResolvedL7Vip;
  t.same(l7.pools, [
    { name: 'www', scheduler: 'rr', persistence: 'cookie' },
    { name: 'api', scheduler: 'leastconn', persistence: 'none' },
  ]);
  t.equal(l7.forwardedFor, true);
  t.equal(l7.members[2].pool, 'api');
  const l4 = validateSlbConfig({
    interface: 'up0',
    vips: [{ id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', members: [{ address: '10.20.0.11', port: 8080 }] }],
  }).vips[0];
  t.notOk(isL7(l4));
  t.notOk('pools' in l4 || 'rules' in l4 || 'mode' in l4 || 'pool' in l4.members[0], 'an L4 VIP document is as before');
});

t.test('bad L7 input is refused naming the field', async (t) => {
  const cases: [string, (v: any) => void, string][] = [
    ['an overlapping rule (same host, a longer path)', (v) => v.rules.push({ host: 'api.example.com', path: '/x', pool: 'www' }), '/rules/4'],
    ['a rule under an earlier wildcard with the same prefix', (v) => v.rules.push({ host: 'a.example.com', path: '/api/v2', pool: 'www' }), '/rules/4'],
    ['a duplicate header rule', (v) => v.rules.push({ header: { name: 'x-pool', value: 'api' }, pool: 'www' }), '/rules/4'],
    ['a regex that does not compile', (v) => (v.rules[3].pathRegex = '/v[0-9+'), '/rules/3/pathRegex'],
    ['an anchored regex', (v) => (v.rules[3].pathRegex = '^/v1'), '/rules/3/pathRegex'],
    ['path and pathRegex', (v) => (v.rules[3].path = '/v'), '/rules/3/pathRegex'],
    ['an unknown scheduler', (v) => (v.pools[0].scheduler = 'fastest'), '/pools/0/scheduler'],
    ['an unknown persistence', (v) => (v.pools[0].persistence = 'ssl'), '/pools/0/persistence'],
    ['a rule naming no pool', (v) => (v.rules[0].pool = 'nope'), '/rules/0/pool'],
    ['a default pool that does not exist', (v) => (v.defaultPool = 'nope'), '/defaultPool'],
    ['a member without a pool', (v) => delete v.members[0].pool, '/members/0/pool'],
    ['a member of an unknown pool', (v) => (v.members[0].pool = 'nope'), '/members/0/pool'],
    ['a duplicate pool', (v) => v.pools.push({ name: 'www' }), '/pools/2/name'],
    ['a rule that matches nothing', (v) => v.rules.push({ pool: 'api' }), '/rules/4'],
    ['a host with a space', (v) => (v.rules[0].host = 'a b.example.com'), '/rules/0/host'],
    ['a path with a space', (v) => (v.rules[1].path = '/a b'), '/rules/1/path'],
    ['a header value with a control character', (v) => (v.rules[2].header.value = 'a\u0001b'), '/rules/2/header/value'],
    ['UDP', (v) => (v.protocol = 'udp'), '/protocol'],
    ['a source-hash scheduler on the VIP', (v) => (v.scheduler = 'sh'), '/scheduler'],
    ['no pools', (v) => delete v.pools, '/pools'],
  ];
  for (const [what, edit, field] of cases) {
    const v = shop() as any;
    edit(v);
    t.ok(fields(() => validateVip(v, [])).includes(field), `${what}: ${field} (${fields(() => validateVip(v, []))})`);
  }
  const l4 = { id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', rules: [], members: [{ address: '10.20.0.11', port: 8080, pool: 'www' }] };
  t.same(fields(() => validateVip(l4, [])).sort(), ['/members/0/pool', '/rules'], 'L7 fields on an L4 VIP are refused, not ignored');
});

t.test('ruleCovers: what makes a later rule unreachable', async (t) => {
  t.ok(ruleCovers({ host: '*.example.com', pool: 'a' }, { host: 'a.b.example.com', path: '/x', pool: 'b' }));
  t.notOk(ruleCovers({ host: '*.example.com', pool: 'a' }, { host: 'example.com', pool: 'b' }), 'the wildcard does not cover the bare domain');
  t.notOk(ruleCovers({ path: '/api/', pool: 'a' }, { path: '/api', pool: 'b' }), 'a longer prefix does not cover a shorter one');
  t.ok(ruleCovers({ path: '/api', pool: 'a' }, { path: '/api/v1', pool: 'b' }));
  t.notOk(ruleCovers({ path: '/api', header: { name: 'X', value: '1' }, pool: 'a' }, { path: '/api/v1', pool: 'b' }), 'a header narrows');
  t.notOk(ruleCovers({ pathRegex: '/a.*', pool: 'a' }, { path: '/a', pool: 'b' }), 'regexes are compared only for equality');
});

/**
 * The match key HAProxy builds: base (host and path), 0x01, then each header slot's value and 0x01. The host is
 * lower-cased here because JavaScript has no inline `(?i:` (PCRE's, around the host only): the renderer's host
 * parts are matched without case by HAProxy, which the lab test checks with real requests.
 */
const key = (host: string, path: string, headers: string[]) => `${host.toLowerCase()}${path}\x01${headers.map((h) => `${h}\x01`).join('')}`;
/** First rule whose regex matches the key, as `map_reg` looks up. */
const route = (entries: [string, string][], k: string, dflt: string) => {
  for (const [re, b] of entries) if (new RegExp(re.replace(/\(\?i:/g, '(?:')).test(k)) return b.split(':')[1];
  return dflt;
};

t.test('the rule map routes each request to its pool, first match wins', async (t) => {
  const v = validateVip(shop(), []) as ResolvedL7Vip;
  const w = renderL7([v], () => true, { dir: '/run/x' });
  const entries = w.maps.get('/run/x/shop.map')!;
  t.equal(entries.length, 4, 'one entry per rule, in order');
  t.same(headerSlots(v.rules), ['x-pool']);
  const cases: [string, string, string, string][] = [
    ['www.example.com', '/', '', 'b.shop.www'],
    ['api.example.com', '/', '', 'b.shop.api'],
    ['API.Example.com:8000', '/x', '', 'b.shop.api'],
    ['shop.example.com', '/api/orders', '', 'b.shop.api'],
    ['shop.example.com', '/apix', '', 'b.shop.www'],
    ['www.example.com', '/', 'api', 'b.shop.api'],
    ['www.example.com', '/', 'apix', 'b.shop.www'],
    ['www.example.com', '/v2/api/items', '', 'b.shop.api'],
    ['www.example.com', '/v2/apx/items', '', 'b.shop.www'],
    ['m.example.com', '/v2/api/items', '', 'b.shop.www'],
    ['example.org', '/api/x', '', 'b.shop.www'],
    ['example.com', '/api/x', '', 'b.shop.www'],
    ['evil.com', '/api/\x01api', '', 'b.shop.www'],
  ];
  for (const [host, path, hdr, want] of cases) t.equal(route(entries, key(host, path, [hdr]), 'b.shop.www'), want, `${host}${path} [${hdr}] → ${want}`);
  t.match(w.config, /set-var\(txn\.fwlb_hit\) var\(txn\.fwlb_key\),map_reg\(\/run\/x\/shop\.map,-:b\.shop\.www\)/);
  t.match(w.config, /track-sc0 var\(txn\.fwlb_hit\),field\(1,:\) table st\.shop/, 'requests are counted per rule');
  t.same(
    entries.map(([, b]) => b.split(':')[0]),
    v.rules.map(ruleId),
    'each entry carries its rule id',
  );
  t.equal(new Set(v.rules.map(ruleId)).size, 4, 'rule ids are distinct');
  t.equal(ruleId({ host: 'A.example.com', pool: 'x' }), ruleId({ host: 'A.example.com', pool: 'x' }), 'and stable');
  t.match(w.config, /req\.fhdr\(x-pool\)/);
  t.notMatch(w.config, /\bcheck\b/, "HAProxy's checks are off");
  t.match(w.skeleton, /dynamic-cookie-key [0-9a-f]{32}/, 'the cookie pool has a dynamic cookie key');
  t.notMatch(w.skeleton, /^\s*server /m, 'the skeleton has no servers: they change at runtime');
});

t.test('escaping: only what cannot mean anything to a regex stays literal', async (t) => {
  t.equal(escapeRegex('a.b-c/d_e'), 'a\\x2eb-c/d_e');
  t.equal(escapeRegex('x y;z\\'), 'x\\x20y\\x3bz\\x5c');
  t.equal(ruleKey({ host: 'a.example.com', pool: 'p' }, []), '^(?i:a\\x2eexample\\x2ecom)(?::[0-9]+)?[^\\x01]*\\x01$');
  t.equal(cliArg('a b;c\\d'), 'a\\ b\\;c\\\\d', 'runtime CLI arguments escape space, ; and backslash');
});

const want = (servers: Record<string, Partial<{ weight: number; state: 'ready' | 'drain' | 'maint'; cookie: boolean }>>): L7Want => ({
  skeleton: '',
  config: '',
  maps: new Map(),
  tables: [],
  panics: [],
  servers: new Map(
    Object.entries(servers).map(([id, s]) => [
      id,
      { backend: id.split('/')[0], name: id.split('/')[1], address: '10.0.0.1', port: 80, weight: 1, cookie: false, state: 'ready' as const, ...s },
    ]),
  ),
});

t.test('serverCommands: the runtime steps from one rendering to the next', async (t) => {
  const a = want({ 'b/s1': {}, 'b/s2': { weight: 2 }, 'b/s3': {} });
  const b = want({ 'b/s1': { state: 'maint' }, 'b/s2': { weight: 5 }, 'b/s4': { cookie: true } });
  t.same(serverCommands(a.servers, b.servers), [
    'set server b/s3 state maint',
    'del server b/s3',
    'set server b/s1 state maint',
    'set server b/s2 weight 5',
    'add server b/s4 10.0.0.1:80 weight 1',
    'set server b/s4 state ready',
    'enable dynamic-cookie backend b',
  ]);
  t.same(serverCommands(a.servers, a.servers), [], 'nothing to do for the same rendering');
  t.same(
    serverCommands(new Map(), want({ 'b/s9': { state: 'maint' } }).servers),
    ['add server b/s9 10.0.0.1:80 weight 1'],
    'a server added down stays in maintenance (where add server leaves it)',
  );
  const m1 = new Map<string, [string, string][]>([['f', [['^a', 'x']]]]);
  t.same(mapsChanged(m1, new Map([['f', [['^a', 'x']]]])), []);
  t.same(
    mapsChanged(
      m1,
      new Map([
        [
          'f',
          [
            ['^b', 'x'],
            ['^a', 'x'],
          ],
        ],
      ]),
    ),
    ['f'],
    'an order change is a change',
  );
});

t.test('parseStat reads show stat CSV by column name', async (t) => {
  const csv = '# pxname,svname,qcur,stot,status,req_tot,hrsp_2xx,hrsp_5xx\nf.shop,FRONTEND,0,10,OPEN,12,,\nb.shop.www,10.0.0.1_80,0,7,MAINT,,6,1\n';
  const s = parseStat(csv);
  t.same(s.get('f.shop/FRONTEND'), { sessions: 10, requests: 12, status: 'OPEN' });
  t.same(s.get('b.shop.www/10.0.0.1_80'), { sessions: 7, requests: 7, status: 'MAINT' });
  t.equal(parseStat('garbage').size, 0);
  const table = '# table: st.shop, type: string, size:20, used:2\n0x1: key=- use=0 exp=0 http_req_cnt=4\n0x2: key=r0123456789 use=0 exp=0 http_req_cnt=31\n';
  t.same(
    [...parseTable(table)],
    [
      ['-', 4],
      ['r0123456789', 31],
    ],
  );
});

t.test("a pool's own check and timers: its members are probed with them", async (t) => {
  const body = shop() as any;
  body.pools[1].check = { kind: 'http', path: '/healthz' };
  body.pools[1].timers = { interval: 500, response: 200, retries: 2, rise: 1 };
  const v = validateVip(body, []);
  const api = v.members[2];
  const www = v.members[0];
  t.match(healthKey(v, api), /healthz/, 'the api member uses its pool check');
  t.notMatch(healthKey(v, www), /healthz/, 'a www member uses the VIP check');
  t.match(healthKey(v, api), /"interval":500/);
  const bad = shop() as any;
  bad.pools[0].timers = { interval: 100, response: 100, retries: 2 };
  t.ok(
    fields(() => validateVip(bad, [])).some((f) => f.startsWith('/pools/0/timers')),
    'pool timers are validated',
  );
});

/** An SLB service whose L7 engine records what it was asked to run, and can be told to refuse. */
function service(withEngine = true) {
  const applied: L7Want[] = [];
  let refuse: string | null = null;
  const engine: L7Engine = {
    paths: { dir: '/run/t' },
    apply: async (w) => {
      if (refuse) throw new Error(refuse);
      const reloaded = !applied.length || applied[applied.length - 1].skeleton !== w.skeleton;
      applied.push(w);
      return { reloaded, commands: 0 };
    },
    stats: async () => new Map(),
    alarms: () => [],
    status: () => ({}),
    stop: () => undefined,
  };
  const emitters = new Map<string, (up: boolean) => void>();
  const nft = fakeSlbKernel();
  const addrs = new Set<string>();
  const saved: unknown[][] = [];
  const s = new SlbService(validateSlbConfig({ interface: 'up0', vips: [] }), {
    kernel: nft,
    addresses: { labelledAddresses: async () => [...addrs], addAddress: async (_i, a) => void addrs.add(a), delAddress: async (_i, a) => void addrs.delete(a) },
    monitors: (key, _v, m, initial, onEvent) => {
      let state = initial;
      emitters.set(`${m.address}:${m.port}`, (up) => {
        const ev: HealthEvent = { from: state, to: up ? 'up' : 'down', at: 1, reason: 'test' };
        state = ev.to;
        onEvent(ev);
      });
      return {
        get state() {
          return state;
        },
        last: null,
        stop() {},
      };
    },
    save: (v) => void saved.push([...v]),
    ...(withEngine ? { l7: engine } : {}),
  });
  return { s, applied, nft, addrs, saved, emitters, refuse: (m: string | null) => (refuse = m) };
}

t.test('the service: an L7 VIP goes to HAProxy, not to nft; health and member changes follow', async (t) => {
  const x = service();
  await x.s.start();
  // Fail closed: with a panic threshold, members that all start down would be in panic and ready at once.
  await x.s.createVip({ ...shop(), panicThreshold: 0 });
  t.equal(x.applied.length, 1, 'one apply');
  const w = x.applied[0];
  t.ok(x.addrs.has('203.0.113.100'), 'the VIP address is held as for L4');
  t.notOk(JSON.stringify(x.nft.batches).includes('shop') || JSON.stringify(x.nft.batches).includes('8000'), 'no nft objects for the L7 VIP');
  t.same(
    [...w.servers.values()].map((s) => s.state),
    ['maint', 'maint', 'maint'],
    'members added through the API start down (they join after their checks rise)',
  );
  x.emitters.get('10.20.0.11:8080')!(true);
  await x.s.tick();
  const after = x.applied[x.applied.length - 1];
  t.equal(after.servers.get('b.shop.www/10.20.0.11_8080')!.state, 'ready', 'a member up is ready in HAProxy');
  t.equal(after.skeleton, w.skeleton, 'a health change keeps the structure (runtime only)');
  await x.s.patchMember('shop', '10.20.0.11:8080', { state: 'drain' });
  t.equal(x.applied[x.applied.length - 1].servers.get('b.shop.www/10.20.0.11_8080')!.state, 'drain');
  await x.s.addMember('shop', { address: '10.20.0.14', port: 8080, pool: 'api' });
  t.ok(x.applied[x.applied.length - 1].servers.has('b.shop.api/10.20.0.14_8080'), 'a member added through the API');
  t.equal(x.saved.length, 3, 'every accepted change is saved');
});

t.test('the service: HAProxy refusing a change leaves everything as it was', async (t) => {
  const x = service();
  await x.s.start();
  await x.s.createVip(shop());
  const n = x.applied.length;
  x.refuse('HAProxy refused "add map": bad regex');
  await t.rejects(x.s.replaceVip('shop', { ...shop(), rules: [] }), /bad regex/);
  t.equal(x.applied.length, n, 'nothing applied');
  t.equal((x.s.vip('shop') as ResolvedL7Vip).rules.length, 4, 'the VIP keeps its rules');
  t.equal(x.saved.length, 1, 'nothing saved');
  await t.rejects(x.s.createVip({ ...shop(), id: 'shop2', address: '203.0.113.101' }), /bad regex/);
  t.notOk(x.addrs.has('203.0.113.101'), 'the address added for the refused VIP is removed again');
  t.throws(() => x.s.vip('shop2'), 'and the VIP does not exist');
  x.refuse(null);
});

t.test('HAProxy that cannot start: the L4 VIPs are applied all the same, an alarm says why, a later pass retries', async (t) => {
  const x = service();
  x.refuse('HAProxy exited while starting (exit code 1)');
  const l4 = { id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', members: [{ address: '10.20.0.11', port: 8080 }] };
  await x.s.start(validateSlbConfig({ interface: 'up0', vips: [l4, shop()] }).vips);
  t.ok(x.s.started, 'the SLB started');
  t.ok(JSON.stringify(x.nft.batches).includes('v_web'), 'the L4 VIP is in the kernel');
  t.match(x.s.alarms().join('\n'), /VIPs HAProxy serves not applied .*exited while starting/, 'an alarm names the failure');
  x.refuse(null);
  await x.s.reconcile();
  t.equal(x.applied.length, 1, 'the next pass applied the L7 VIP');
  t.notMatch(x.s.alarms().join('\n'), /not applied/, 'and the alarm cleared');
});

t.test('HAProxy refusing while a health event arrives: the L4 VIP follows its member at once, the L7 VIP later', async (t) => {
  const x = service();
  const l4 = {
    id: 'web',
    address: '203.0.113.100',
    port: 80,
    protocol: 'tcp',
    members: [
      { address: '10.20.0.21', port: 8080 },
      { address: '10.20.0.22', port: 8080 },
    ],
  };
  await x.s.start(validateSlbConfig({ interface: 'up0', vips: [l4, shop()] }).vips);
  const n = x.nft.batches.length;
  x.refuse('HAProxy refused "set server": no answer');
  x.emitters.get('10.20.0.21:8080')!(false);
  x.emitters.get('10.20.0.11:8080')!(false);
  await x.s.tick();
  t.ok(x.nft.batches.length > n, 'the L4 member left the kernel pool although HAProxy refused');
  t.notOk(x.nft.targets(80).includes('10.20.0.21:8080'), 'the down L4 member takes no new session');
  t.match(x.s.alarms().join('\n'), /VIPs HAProxy serves not applied/, 'the L7 failure is an alarm');
  x.refuse(null);
  await x.s.tick();
  t.equal(x.applied[x.applied.length - 1].servers.get('b.shop.www/10.20.0.11_8080')!.state, 'maint', 'the next pass took the L7 member out');
  t.notMatch(x.s.alarms().join('\n'), /not applied/);
});

t.test('the service without HAProxy: an L7 VIP is refused (400 naming /mode), L4 works', async (t) => {
  const x = service(false);
  await x.s.start();
  t.same(
    await x.s.createVip(shop()).then(
      () => [],
      (e) => (e instanceof ConfigError ? e.problems.map((p) => p.field) : [String(e)]),
    ),
    ['/mode'],
  );
  await x.s.createVip({ id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', members: [{ address: '10.20.0.11', port: 8080 }] });
  t.equal(x.s.vips().length, 1);
});

t.test('haproxyCli: a socket that refuses (a master re-executing) is retried only when asked, the command sent once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'master.sock');
  const got: string[] = [];
  const server = createServer((c) => {
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      got.push(d);
      c.end('done\n');
    });
  });
  t.teardown(() => server.close());
  const e = await haproxyCli(path, 'reload').then(
    () => null,
    (err: NodeJS.ErrnoException) => err,
  );
  t.match(e?.code, /^(ENOENT|ECONNREFUSED)$/, 'without a retry the refusal is the answer');
  await t.rejects(haproxyCli(path, 'reload', 3000, 100), 'retrying for 100 ms against no listener still fails');
  setTimeout(() => server.listen(path), 250);
  t.equal(await haproxyCli(path, 'reload', 3000, 2000), 'done\n', 'retrying: answered once the socket listens');
  t.same(got, ['reload\n'], 'the command reached HAProxy once');
});

t.test('an IPv6 L7 VIP: HAProxy binds the address in brackets, and its servers may be of either family', async (t) => {
  const s = shop() as any;
  s.address = '2001:db8:5:0::100';
  s.members[0].address = '2001:db8:20::11';
  const v = validateVip(s, []) as ResolvedL7Vip;
  const w = renderL7([v], () => true, { dir: '/run/x' });
  t.match(w.config, /^\s*bind \[2001:db8:5::100\]:\d+ transparent$/m, 'the canonical address in brackets');
  t.match(w.config, /^\s*server \S+ \[2001:db8:20::11\]:8080 /m, 'an IPv6 server in brackets');
  t.match(w.config, new RegExp(`^\\s*server \\S+ ${s.members[1].address.replace(/\./g, '\\.')}:8080 `, 'm'), 'an IPv4 server as it was');
  const ids = [...w.servers.keys()];
  t.same(
    serverCommands(new Map(), w.servers).filter((c) => c.startsWith('add server') && c.includes('2001')),
    [`add server ${ids.find((i) => i.includes('2001'))} [2001:db8:20::11]:8080 weight 1`],
    'a server added at runtime: in brackets too',
  );
});

t.test('pool panic: a pool with too few members up serves on every enabled member, each pool on its own', async (t) => {
  const v = validateVip({ ...shop(), panicThreshold: 0.5 }, []) as ResolvedL7Vip;
  const state = (w: L7Want, address: string) => [...w.servers.values()].find((s) => s.address === address)?.state;
  const down =
    (...addrs: string[]) =>
    (_: unknown, m: { address: string }) =>
      !addrs.includes(m.address);
  // api has one member (10.20.0.13); www has two.
  const api = renderL7([v], down('10.20.0.13'), { dir: '/run/x' });
  t.equal(state(api, '10.20.0.13'), 'ready', "the api pool's only member looks down: the pool is in panic and it stays ready");
  t.same(api.panics, [{ vip: 'shop', pool: 'api', healthy: 0, enabled: 1, threshold: 0.5 }], 'the panic names its VIP and pool');
  const www = renderL7([v], down('10.20.0.11'), { dir: '/run/x' });
  t.equal(state(www, '10.20.0.11'), 'maint', 'one of two www members down (1 of 2 up is not below 50 %): it leaves');
  t.same(www.panics, [], 'no pool in panic');
  const both = renderL7([v], down('10.20.0.11', '10.20.0.12'), { dir: '/run/x' });
  t.same(
    [state(both, '10.20.0.11'), state(both, '10.20.0.12'), state(both, '10.20.0.13')],
    ['ready', 'ready', 'ready'],
    'both www members down: www in panic; api is up and unaffected',
  );
  t.same(
    both.panics.map((p) => p.pool),
    ['www'],
  );
  const drained = validateVip(
    { ...shop(), panicThreshold: 0.5, members: shop().members.map((m: { pool: string }, i: number) => (i === 0 ? { ...m, state: 'drain' } : m)) },
    [],
  ) as ResolvedL7Vip;
  const d = renderL7([drained], down('10.20.0.11', '10.20.0.12'), { dir: '/run/x' });
  t.equal(state(d, '10.20.0.11'), 'maint', 'a drained member takes no requests in a panic either');
  t.equal(state(d, '10.20.0.12'), 'ready', 'the enabled one does');
  const closed = validateVip({ ...shop(), panicThreshold: 0 }, []) as ResolvedL7Vip;
  const c = renderL7([closed], down('10.20.0.13'), { dir: '/run/x' });
  t.equal(state(c, '10.20.0.13'), 'maint', 'threshold 0: fail closed, the pool answers 503');
  t.same(c.panics, []);
});

t.test('the service: a pool in panic is an alarm naming the VIP and the pool, gone once a member is up', async (t) => {
  const x = service();
  await x.s.start();
  await x.s.createVip({ ...shop(), panicThreshold: 0.5 });
  const alarms = x.s.alarms().join('\n');
  t.match(alarms, /VIP shop pool www in panic: 0 of 2 enabled members up \(threshold 50%\), every enabled member takes requests/);
  t.match(alarms, /VIP shop pool api in panic: 0 of 1/);
  t.same(x.s.poolPanics(), [
    { vip: 'shop', pool: 'www', healthy: 0, enabled: 2, threshold: 0.5 },
    { vip: 'shop', pool: 'api', healthy: 0, enabled: 1, threshold: 0.5 },
  ]);
  t.same(
    [...x.applied[x.applied.length - 1].servers.values()].map((s) => s.state),
    ['ready', 'ready', 'ready'],
    'every enabled member takes requests',
  );
  x.emitters.get('10.20.0.13:8080')!(true);
  await x.s.tick();
  t.notMatch(x.s.alarms().join('\n'), /pool api in panic/, 'api out of panic once its member is up');
  t.match(x.s.alarms().join('\n'), /pool www in panic/, 'www still in it');
});

t.test('the PROXY protocol: a member that asks for it gets the header from HAProxy and in its checks; L4 refuses it', async (t) => {
  const s = shop() as any;
  s.members[0].proxyProtocol = 'v2';
  s.members[1].proxyProtocol = 'v1';
  const v = validateVip(s, []) as ResolvedL7Vip;
  t.equal(v.members[0].proxyProtocol, 'v2', 'kept by validation');
  t.notOk('proxyProtocol' in v.members[2], 'absent where not asked');
  const w = renderL7([v], () => true, { dir: '/run/x' });
  t.match(w.config, /^\s*server 10\.20\.0\.11_8080 10\.20\.0\.11:8080 weight 1 send-proxy-v2$/m, 'v2: send-proxy-v2 on the server line');
  t.match(w.config, /^\s*server 10\.20\.0\.12_8080 10\.20\.0\.12:8080 weight 1 send-proxy$/m, 'v1: send-proxy');
  t.match(w.config, /^\s*server 10\.20\.0\.13_8080 10\.20\.0\.13:8080 weight 1$/m, 'none for the others');
  const ids = [...w.servers.keys()];
  t.same(
    serverCommands(new Map(), w.servers).filter((c) => c.startsWith('add server')),
    [
      `add server ${ids[0]} 10.20.0.11:8080 weight 1 send-proxy-v2`,
      `add server ${ids[1]} 10.20.0.12:8080 weight 1 send-proxy`,
      `add server ${ids[2]} 10.20.0.13:8080 weight 1`,
    ],
    'and on a server added at runtime',
  );
  // The header cannot change at runtime: the server is taken out and added again with it.
  const plain = renderL7([validateVip(shop(), []) as ResolvedL7Vip], () => true, { dir: '/run/x' });
  t.same(
    serverCommands(plain.servers, w.servers).filter((c) => c.includes(ids[0])),
    [
      `set server ${ids[0]} state maint`,
      `del server ${ids[0]}`,
      `add server ${ids[0]} 10.20.0.11:8080 weight 1 send-proxy-v2`,
      `set server ${ids[0]} state ready`,
    ],
  );
  t.same(serverCommands(w.servers, w.servers), [], 'nothing for the same rendering');
  // fwlb's HTTP check of such a member starts with a health check's header; a check on another port does not.
  t.match(healthKey(v, v.members[0]), /"proxy":"v2"/);
  t.match(healthKey(v, v.members[1]), /"proxy":"v1"/);
  t.notMatch(healthKey(v, v.members[2]), /proxy/);
  const other = shop() as any;
  other.check = { kind: 'http', path: '/', port: 9000 };
  other.members[0].proxyProtocol = 'v2';
  const o = validateVip(other, []);
  t.notMatch(healthKey(o, o.members[0]), /proxy/, 'a check on another port sends no header');
  // An L4 VIP forwards packets: nothing can be put in front of them.
  t.same(
    fields(() =>
      validateSlbConfig({
        interface: 'up0',
        vips: [{ id: 'web', address: '203.0.113.100', port: 80, protocol: 'tcp', members: [{ address: '10.20.0.11', port: 8080, proxyProtocol: 'v2' }] }],
      }),
    ),
    ['/vips/0/members/0/proxyProtocol'],
    'an L4 member with proxyProtocol is refused, naming the field',
  );
  t.same(
    fields(() => validateVip({ ...shop(), members: [{ ...shop().members[0], proxyProtocol: 'v3' }] }, [])),
    ['/members/0/proxyProtocol'],
  );
});
