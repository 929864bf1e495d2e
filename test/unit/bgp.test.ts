// Unit: the bgp section (validation, defaults), BIRD's configuration fwlb renders (checked by BIRD's own parser),
// the announce table's plan (make before break), the daemon's answers parsed, and the announcer's decisions.
import { t } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, validateBalancerConfig } from '@fwlb/config';
import { ANNOUNCE_METRIC, AnnouncedRoute, parseBfdSessions, parseBirdProtocols, planAnnounce, renderBird } from '@fwlb/routing';
import { Announcer, Membership } from '@fwlb/balancer';
import { fakes } from '../helpers/fake-announcer';

const base = {
  role: 'outside',
  sideInterface: 'sd0',
  firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
  hash: { seed: 7 },
};
const peers = [
  { name: 'router', address: '192.0.2.1', asn: 65000, announce: ['203.0.113.0/24', '10.96.0.0/16'] },
  { name: 'router_6', address: '2001:DB8:192::1', asn: 65000, announce: ['2001:db8:5::/64'] },
  { name: 'fw1', address: '172.16.0.11', asn: 65101, announce: ['198.51.100.0/24'], bfd: false },
];
const withBgp = (bgp: object) => validateBalancerConfig({ ...base, bgp: { asn: 65001, routerId: '192.0.2.11', peers, ...bgp } });
const problems = (bgp: object) => {
  try {
    withBgp(bgp);
    return [];
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.problems.map((p) => `${p.field}: ${p.message}`);
  }
};

t.test('the bgp section: defaults, canonical addresses, prefixes with their length', async (t) => {
  const b = withBgp({}).bgp!;
  t.equal(b.configFile, '/etc/bird/bird.conf');
  t.equal(b.announceTable, 250);
  t.same(b.bfd, { intervalMs: 100, multiplier: 3 });
  t.same(b.prepend, { drained: 2, unfit: 4 });
  t.equal(b.peers[1].address, '2001:db8:192::1');
  t.equal(b.peers[1].family, 6);
  t.same(
    b.peers.map((p) => p.bfd),
    [true, true, false],
  );
  t.equal(validateBalancerConfig(base).bgp, null, 'absent: null');
});

t.test('the bgp section: bad input is named by field', async (t) => {
  t.match(problems({ peers: [{ ...peers[0], announce: ['2001:db8:5::/64'] }] }), [/\/bgp\/peers\/0\/announce\/0: .*IPv6 but the session to 192.0.2.1 is IPv4/]);
  t.match(problems({ peers: [{ ...peers[0], announce: ['203.0.113.7/24'] }] }), [/announce\/0: .*host bits set: did you mean 203.0.113.0\/24/]);
  t.match(problems({ peers: [peers[0], { ...peers[2], name: 'router' }] }), [/\/bgp\/peers\/1\/name: duplicate peer name "router"/]);
  t.match(problems({ peers: [peers[0], { ...peers[2], address: '192.0.2.1' }] }), [/\/bgp\/peers\/1\/address: duplicate peer address/]);
  t.match(problems({ announceTable: 1000 }), [/\/bgp\/announceTable: 1000 is one of the firewalls' routing tables/]);
  t.match(problems({ announceTable: 254 }), [/\/bgp\/announceTable: 254 is the kernel's main table/]);
  t.match(problems({ prepend: { drained: 5, unfit: 2 } }), [/\/bgp\/prepend\/unfit/]);
  t.ok(problems({ peers: [{ ...peers[0], extra: 1 }] }).length, 'unknown fields refused');
  t.ok(problems({ peers: [{ ...peers[0], name: 'a b' }] }).length, 'a name the daemon would not take refused');
  t.throws(() => validateBalancerConfig({ ...base, tables: { base: 200, size: 100 }, bgp: { asn: 1, routerId: '192.0.2.11', peers } }), /announceTable/);
});

t.test('BIRD accepts what fwlb renders (its own parser, bird -p)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-bird-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const b = withBgp({ prepend: { drained: 1, unfit: 3 } }).bgp!;
  const text = renderBird(b, 'ob1');
  const file = join(dir, 'bird.conf');
  writeFileSync(file, text);
  t.doesNotThrow(() => execFileSync('bird', ['-p', '-c', file], { stdio: 'pipe' }), 'bird -p accepts it');
  t.match(text, /protocol bgp fwlb_router \{[^}]*neighbor 192\.0\.2\.1 as 65000;[^}]*bfd on;/s);
  t.match(text, /protocol bgp fwlb_fw1 \{[^}]*bfd off;/s, 'BFD per peer');
  t.match(text, /kernel table 250;\s+learn;/, 'learns the announce table');
  t.match(text, /net ~ \[ 203\.0\.113\.0\/24, 10\.96\.0\.0\/16 \]/, 'each peer exports only its prefixes');
  t.match(text, /krt_metric >= 300 then \{ (bgp_path\.prepend\(65001\); ){2}bgp_path\.prepend\(65001\); \}/, 'unfit: 3 prepends');
  t.match(text, /krt_metric >= 200 then \{ bgp_path\.prepend\(65001\); \}/, 'drained: 1');
  t.match(text, /ipv6 table fwlb6;/);
  const v4only = renderBird({ ...b, peers: [b.peers[2]] }, 'ob1');
  t.notMatch(v4only, /ipv6|protocol bfd/, 'no IPv6 table without an IPv6 peer, no BFD without a BFD peer');
  writeFileSync(file, v4only);
  t.doesNotThrow(() => execFileSync('bird', ['-p', '-c', file], { stdio: 'pipe' }));
});

t.test('the announce plan: one route per prefix at the metric of the state; added before the old ones go', async (t) => {
  const pfx = [
    { family: 4 as const, prefix: '203.0.113.0/24' },
    { family: 6 as const, prefix: '2001:db8:5::/64' },
  ];
  const fit = planAnnounce(pfx, 'fit', []);
  t.same(
    fit.add.map((r) => r.metric),
    [100, 100],
  );
  t.same(fit.del, []);
  const actual: AnnouncedRoute[] = fit.add;
  t.same(planAnnounce(pfx, 'fit', actual), { add: [], del: [] }, 'in place: nothing to do');
  const drain = planAnnounce(pfx, 'drained', actual);
  t.same(
    drain.add.map((r) => [r.prefix, r.metric]),
    [
      ['203.0.113.0/24', 200],
      ['2001:db8:5::/64', 200],
    ],
  );
  t.same(drain.del, actual, 'the fit routes go (after the drained ones are in: see Rtnl.applyAnnounce)');
  const stale = planAnnounce(pfx, 'fit', [...actual, { family: 4, prefix: '192.0.2.0/24', metric: 100 }, { family: 4, prefix: '203.0.113.0/24', metric: 7 }]);
  t.same(
    stale.del.map((r) => `${r.prefix} ${r.metric}`),
    ['192.0.2.0/24 100', '203.0.113.0/24 7'],
    'a prefix no longer configured, a foreign metric',
  );
  t.same(planAnnounce(pfx, null, actual).del, actual, 'null: nothing announced');
  t.same(ANNOUNCE_METRIC, { fit: 100, drained: 200, unfit: 300 });
});

t.test('birdc show protocols, parsed', async (t) => {
  const text = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     00:32:59.631  
fwlb_router BGP        ---        up     00:33:02.659  Established   
fwlb_fw1   BGP        ---        start  00:33:02.659  Active        Socket: Connection refused
fwlb_announce4 Kernel     fwlb4      up     00:32:59.631  
`;
  const p = parseBirdProtocols(text);
  t.same(
    p.map((x) => [x.name, x.proto, x.state, x.info]),
    [
      ['device1', 'Device', 'up', ''],
      ['fwlb_router', 'BGP', 'up', 'Established'],
      ['fwlb_fw1', 'BGP', 'start', 'Active        Socket: Connection refused'],
      ['fwlb_announce4', 'Kernel', 'up', ''],
    ],
  );
  t.same(
    p.map((x) => x.established),
    [false, true, false, false],
    'established: a BGP session whose info says so',
  );
  t.same(parseBirdProtocols('Unable to connect to server control socket'), []);
  const bfd = parseBfdSessions(`BIRD 2.0.12 ready.
fwlb_bfd:
IP address                Interface  State      Since         Interval  Timeout
192.0.2.1                 sd0        Up         01:01:48.191    0.100    0.300
2001:db8:192::1           sd0        Down       01:01:49.002    1.000    0.000
`);
  t.same(
    [...bfd],
    [
      ['192.0.2.1', 'Up'],
      ['2001:db8:192::1', 'Down'],
    ],
  );
});

t.test('the announcer: fit, unfit, drained; a drained node stays drained across a restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-ann-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const b = { ...withBgp({}).bgp!, configFile: join(dir, 'bird.conf') };
  let unfit: string | null = null;
  const f = fakes(peers);
  const a = new Announcer(b, 'ob1', { rtnl: f.rtnl, daemon: f.daemon, unfitReason: () => unfit, log: (l) => f.log.push(l) });
  await a.start(1e9);
  t.teardown(() => a.stop());
  t.equal(f.loaded.length, 1, 'the configuration was loaded');
  t.equal(readFileSync(b.configFile, 'utf8'), f.loaded[0]);
  t.same([...new Set(f.table().map((r) => r.metric))], [100]);
  t.equal(f.table().length, 4, 'each configured prefix once');
  unfit = 'no firewall answers';
  await a.update();
  t.equal(a.status().state, 'unfit');
  t.same([...new Set(f.table().map((r) => r.metric))], [300]);
  t.same(f.applied.at(-1)!.add.length, 4, 'added and deleted in one plan');
  unfit = null;
  await a.setDrained(true);
  t.same([...new Set(f.table().map((r) => r.metric))], [200]);
  unfit = 'x';
  await a.update();
  t.equal(a.status().state, 'unfit', 'unfit wins over drained');
  unfit = null;
  await a.update();
  a.stop();
  // A new controller over the same table: still drained.
  const g = fakes(peers, { table: f.table() });
  const a2 = new Announcer(b, 'ob1', { rtnl: g.rtnl, daemon: g.daemon, unfitReason: () => null, log: (l) => g.log.push(l) });
  await a2.start(1e9);
  t.teardown(() => a2.stop());
  t.equal(a2.status().state, 'drained');
  t.same(g.applied, [], 'the table was adopted as it was');
  t.match(g.log.join('\n'), /stays drained/);
  await a2.setDrained(false);
  t.same([...new Set(g.table().map((r) => r.metric))], [100]);
  t.same(a2.alarms(), []);
});

t.test('a configuration the daemon refuses is never put in place nor loaded; an alarm quotes the daemon', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-ann-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const b = { ...withBgp({}).bgp!, configFile: join(dir, 'bird.conf') };
  writeFileSync(b.configFile, '# the last good one\n');
  const f = fakes(peers, { refuse: 'fwlb_fw1' });
  const a = new Announcer(b, 'ob1', { rtnl: f.rtnl, daemon: f.daemon, unfitReason: () => null, log: (l) => f.log.push(l) });
  t.equal(await a.loadConfig(), false);
  t.equal(readFileSync(b.configFile, 'utf8'), '# the last good one\n', 'the file the daemon runs from is untouched');
  t.notOk(existsSync(`${b.configFile}.fwlb-new`), 'no leftover');
  t.same(f.loaded, [], 'nothing loaded');
  t.match(a.alarms(), [/refused by bird -p, the running one is kept: .*fwlb_fw1 refused/]);
  t.equal(a.status().daemon.config, 'refused');
});

t.test('membership: why a node is unfit to attract traffic', async (t) => {
  const cfg = validateBalancerConfig({
    ...base,
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    health: { target: '172.17.0.1' },
  });
  let now = 1000;
  const m = new Membership(cfg, false, () => now);
  t.equal(m.unfitReason(), null);
  m.setHealth('fw1', false);
  t.equal(m.unfitReason(), null, 'one firewall down: still fit');
  now += 60000;
  m.setHealth('fw2', false);
  t.match(m.unfitReason(), /panic/, 'most down, not at once... panic: the probes are not believed');
  for (const id of ['fw1', 'fw2', 'fw3']) m.setLink(id, false);
  t.match(m.unfitReason(), /every link to the firewalls is down/);
  for (const id of ['fw1', 'fw2', 'fw3']) m.setLink(id, true);
  const m2 = new Membership(validateBalancerConfig({ ...base, health: { target: '172.17.0.1', panicThreshold: 0 } }), false);
  m2.setHealth('fw1', false);
  m2.setHealth('fw2', false);
  t.match(m2.unfitReason(), /no firewall answers this node's probes/);
});
