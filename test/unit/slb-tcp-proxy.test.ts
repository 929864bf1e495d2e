// Unit: proxied TCP VIPs (mode tcp): their validation, their HAProxy rendering (a tcp frontend and one backend, the
// PROXY protocol per member), and HAProxy's own check of the rendered config.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, isL7, isProxied, ResolvedVip, validateVip, vipDocument } from '@fwlb/config';
import { renderL7, serverCommands, TCP_IDLE_TIMEOUT } from '@fwlb/slb';

const db = (extra: object = {}): any => ({
  id: 'db',
  address: '203.0.113.20',
  port: 5432,
  protocol: 'tcp',
  mode: 'tcp',
  members: [
    { address: '10.20.0.11', port: 5432, proxyProtocol: 'v2' },
    { address: '10.20.0.12', port: 5432, weight: 3, proxyProtocol: 'v1' },
    { address: '2001:db8:20::13', port: 5432 },
  ],
  ...extra,
});

const problems = (doc: unknown): { field: string; message: string }[] => {
  try {
    validateVip(doc, []);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
};

t.test('a proxied TCP VIP: members in either family with a PROXY header each; nothing of L7 or L4 that it cannot do', async (t) => {
  const v = validateVip(db(), []);
  t.ok(isProxied(v), 'HAProxy serves it');
  t.notOk(isL7(v), 'it is not an L7 VIP (no rules, no pools)');
  t.equal(v.mode, 'tcp');
  t.equal(v.members[2].address, '2001:db8:20::13', 'an IPv6 member behind an IPv4 VIP (HAProxy opens its own connection)');
  t.same(validateVip(vipDocument(v), []), v, 'its document validates to the same VIP (the state file and the API round trip)');
  t.notOk('pools' in v || 'defaultPool' in v || 'pool' in v.members[0], 'no pool is made up for it');
  const refused: [object, string, RegExp][] = [
    [{ protocol: 'udp' }, '/protocol', /must be "tcp"/],
    [{ scheduler: 'flow' }, '/scheduler', /"rr" or "sh"/],
    [{ snat: {} }, '/snat', /L4 VIPs only/],
    [{ pools: [{ name: 'www' }] }, '/pools', /L7 VIPs only/],
    [{ forwardedFor: true }, '/forwardedFor', /L7 VIPs only/],
    [{ tls: { certificate: '/etc/x.pem' } }, '/tls', /L7 VIPs only/],
    [{ mode: 'tcpx' }, '/mode', /must be equal to one of the allowed values/],
  ];
  for (const [extra, field, message] of refused) {
    const p = problems(db(extra));
    t.ok(
      p.some((x) => x.field === field && message.test(x.message)),
      `${JSON.stringify(extra)} is refused naming ${field}: ${JSON.stringify(p)}`,
    );
  }
  const pooled = db();
  pooled.members[0].pool = 'www';
  t.same(
    problems(pooled).map((x) => x.field),
    ['/members/0/pool'],
    'a member with a pool is refused',
  );
  const l4 = db({ mode: 'l4' });
  t.same(
    problems(l4)
      .map((x) => x.field)
      .sort(),
    ['/members/0/proxyProtocol', '/members/1/proxyProtocol', '/members/2/address'],
    'the same members under an L4 VIP: no PROXY header, no other family',
  );
});

t.test('the rendering: a tcp frontend on the VIP, one backend with every member, HAProxy idle timeouts for TCP', async (t) => {
  const v = validateVip(db(), []);
  const down = new Set(['10.20.0.12']);
  const want = renderL7([v], (_, m) => !down.has(m.address), { dir: '/run/x' });
  const cfg = want.config.split('\n');
  const from = (head: string) => cfg.slice(cfg.indexOf(head), cfg.indexOf(head) + 6);
  t.same(from('frontend f.db').slice(0, 5), [
    'frontend f.db',
    '  mode tcp',
    '  bind 203.0.113.20:5432 transparent',
    `  timeout client ${TCP_IDLE_TIMEOUT}`,
    '  default_backend b.db.tcp',
  ]);
  t.same(from('backend b.db.tcp'), [
    'backend b.db.tcp',
    '  mode tcp',
    `  timeout server ${TCP_IDLE_TIMEOUT}`,
    '  balance roundrobin',
    '  server 10.20.0.11_5432 10.20.0.11:5432 weight 1 send-proxy-v2',
    '  server 10.20.0.12_5432 10.20.0.12:5432 weight 3 send-proxy disabled',
  ]);
  t.ok(cfg.includes('  server 2001:db8:20::13_5432 [2001:db8:20::13]:5432 weight 1'), 'the IPv6 member, without a header');
  t.notOk(want.config.includes('http-request set-var') || want.config.includes('st.db'), 'no rule map, no rule counters');
  t.same(want.tables, []);
  t.same([...want.maps.keys()], []);
  const sh = renderL7([validateVip(db({ scheduler: 'sh' }), [])], () => true, { dir: '/run/x' }).config;
  t.match(sh, /backend b\.db\.tcp\n {2}mode tcp\n.*\n {2}balance source\n {2}hash-type consistent\n/, 'sh: a consistent hash of the source address');
  // A member's header changes at runtime by taking it out and adding it again.
  const noHeader = renderL7([validateVip(db({ members: [{ address: '10.20.0.11', port: 5432 }] }), [])], () => true, { dir: '/run/x' });
  const withHeader = renderL7([validateVip(db({ members: [{ address: '10.20.0.11', port: 5432, proxyProtocol: 'v1' }] }), [])], () => true, {
    dir: '/run/x',
  });
  t.same(serverCommands(noHeader.servers, withHeader.servers), [
    'set server b.db.tcp/10.20.0.11_5432 state maint',
    'del server b.db.tcp/10.20.0.11_5432',
    'add server b.db.tcp/10.20.0.11_5432 10.20.0.11:5432 weight 1 send-proxy',
    'set server b.db.tcp/10.20.0.11_5432 state ready',
  ]);
});

t.test('HAProxy accepts the rendering of a proxied TCP VIP beside an L7 VIP', async (t) => {
  const haproxy = spawnSync('haproxy', ['-v']);
  if (haproxy.error) return t.fail('haproxy is not installed (scripts/setup.sh installs it)');
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-tcp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const web: ResolvedVip = validateVip(
    {
      id: 'web',
      address: '203.0.113.21',
      port: 80,
      protocol: 'tcp',
      mode: 'http',
      pools: [{ name: 'www' }],
      defaultPool: 'www',
      members: [{ address: '10.20.0.11', port: 8080, pool: 'www' }],
    },
    [],
  );
  const want = renderL7([validateVip(db({ scheduler: 'sh' }), []), web], () => true, { dir });
  for (const [file, entries] of want.maps) writeFileSync(file, entries.map(([k, v]) => `${k} ${v}\n`).join(''));
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, want.config);
  const r = spawnSync('haproxy', ['-c', '-f', cfg], { encoding: 'utf8' });
  t.equal(r.status, 0, `haproxy -c: ${r.stdout}${r.stderr}`);
  t.notMatch(`${r.stdout}${r.stderr}`, /WARNING/, 'and warns of nothing');
});
