// Unit: the balancer config schema names the bad field and fills defaults.
import { t } from 'tap';
import { validateBalancerConfig, ConfigError, parsePrefix, Prefix, prefixesOverlap, prefixHas } from '@fwlb/config';

const good = () => ({
  role: 'outside',
  sideInterface: 'cli0',
  firewalls: [
    { id: 'fw1', nextHop: '172.16.1.2', interface: 'fw1' },
    { id: 'fw2', nextHop: '172.16.2.2', interface: 'fw2' },
  ],
  hash: { seed: 1234 },
});

/** The config error's message, or "accepted". */
const err = (doc: unknown) => {
  try {
    validateBalancerConfig(doc);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return 'accepted';
};

t.test('health defaults', async (t) => {
  const c = validateBalancerConfig({ ...good(), health: { target: '203.0.113.1' } });
  t.same(c.health!.check, { kind: 'icmp' });
  t.equal(c.health!.timers.retries, 3);
  t.equal(validateBalancerConfig(good()).health, null);
  t.same(c.health!.targets, ['203.0.113.1'], 'one target becomes a list of one');
  const many = validateBalancerConfig({ ...good(), health: { targets: ['172.17.0.1', '172.17.0.2'] } });
  t.same(many.health!.targets, ['172.17.0.1', '172.17.0.2']);
  const st = validateBalancerConfig({ ...good(), sessionTable: { url: 'redis://127.0.0.1:6379' } }).sessionTable!;
  t.equal(st.heartbeatSeconds, 2, 'the agreement heartbeat: 2 s unless set');
  t.equal(st.resyncSeconds, 30, 'apart from the full re-sync');
});

t.test('firewalls on one shared interface are told apart by MAC', async (t) => {
  const shared = (macs: (string | undefined)[]) => ({
    ...good(),
    firewalls: macs.map((mac, i) => ({ id: `fw${i + 1}`, nextHop: `172.16.0.${11 + i}`, interface: 'tr0', ...(mac ? { mac } : {}) })),
  });
  const c = validateBalancerConfig(shared(['02:fb:01:00:00:01', '02:fb:01:00:00:02']));
  t.equal(c.firewalls[1].mac, '02:fb:01:00:00:02');
  t.throws(() => validateBalancerConfig(shared(['02:fb:01:00:00:01', undefined])), /\/firewalls\/1\/mac: is required: interface tr0 is shared by 2 firewalls/);
  t.throws(
    () => validateBalancerConfig(shared(['02:fb:01:00:00:01', '02:FB:01:00:00:01'])),
    /\/firewalls\/1\/mac: duplicate MAC 02:FB:01:00:00:01 on interface tr0 \(also \/firewalls\/0\/mac\)/,
  );
});

t.test('a good config is resolved and frozen', async (t) => {
  const c = validateBalancerConfig(good());
  t.equal(c.hash.buckets, 251);
  t.equal(c.firewalls[0].enabled, true);
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.firewalls[0]));
});

const bad: [string, (c: any) => void, RegExp][] = [
  ['unknown top-level key', (c) => (c.colour = 'red'), /\/colour: unknown key/],
  ['unknown nested key', (c) => (c.firewalls[1].weight = 3), /\/firewalls\/1\/weight: unknown key/],
  ['duplicate firewall id', (c) => (c.firewalls[1].id = 'fw1'), /\/firewalls\/1\/id: duplicate firewall id "fw1"/],
  ['invalid address', (c) => (c.firewalls[0].nextHop = '172.16.1.300'), /\/firewalls\/0\/nextHop: must be a valid ipv4 address/],
  ['bad role', (c) => (c.role = 'middle'), /\/role/],
  ['missing hash', (c) => delete c.hash, /\/hash: is required/],
  ['non-prime buckets', (c) => (c.hash.buckets = 256), /\/hash\/buckets: must be prime/],
  ['mark base overlapping bucket numbers', (c) => (c.marks = { base: 10, size: 4 }), /\/marks\/base: must be >= hash.buckets/],
  ['range too small', (c) => (c.tables = { base: 100, size: 1 }), /\/tables\/size/],
  ['firewall on the side interface', (c) => (c.firewalls[0].interface = 'cli0'), /\/firewalls\/0\/interface/],
  [
    'health response >= interval',
    (c) => (c.health = { target: '203.0.113.1', timers: { interval: 100, response: 100, retries: 3 } }),
    /\/health\/timers\/response: response \(100 ms\) must be smaller than interval \(100 ms\)/,
  ],
  [
    'health check with its own mark',
    (c) => (c.health = { target: '203.0.113.1', check: { kind: 'icmp', mark: 5 } }),
    /\/health\/check\/mark: is set per firewall/,
  ],
  ['health check of an unknown kind', (c) => (c.health = { target: '203.0.113.1', check: { kind: 'smtp' } }), /\/health\/check/],
  ['an SLB on the outside node', (c) => (c.slb = '/etc/fwlb/slb.json'), /\/slb: only the inside node runs the SLB tier/],
  ['a session table with an unknown key', (c) => (c.sessionTable = { url: 'redis://127.0.0.1:6379', ttl: 5 }), /\/sessionTable\/ttl: unknown key/],
  [
    'a heartbeat of 0.1 s',
    (c) => (c.sessionTable = { url: 'redis://127.0.0.1:6379', heartbeatSeconds: 0.1 }),
    /\/sessionTable\/heartbeatSeconds: must be >= 0.5/,
  ],
  ['a session table URL of another scheme', (c) => (c.sessionTable = { url: 'http://x' }), /\/sessionTable\/url/],
  ['bad interface name', (c) => (c.sideInterface = 'eth0; rm -rf /'), /\/sideInterface/],
  // Owned ranges that cover the system's tables or rules: fwlb deletes what it does not want inside its ranges.
  ['tables covering main/local', (c) => (c.tables = { base: 252, size: 3 }), /\/tables: the range 252..254 covers the system's routing tables 253, 254/],
  ['tables covering 255', (c) => (c.tables = { base: 250, size: 10 }), /\/tables: .*253, 254, 255/],
  ['rule priorities covering main and default', (c) => (c.rulePriorities = { base: 32000, size: 4096 }), /\/rulePriorities: .*32766, 32767/],
  [
    'a tcp health check without a port',
    (c) => (c.health = { target: '203.0.113.1', check: { kind: 'tcp' } }),
    /\/health\/check\/port: is required for a tcp check/,
  ],
  ['an http health check without a port', (c) => (c.health = { target: '203.0.113.1', check: { kind: 'http' } }), /\/health\/check\/port: is required/],
  [
    'a regex that does not compile',
    (c) => (c.health = { target: '203.0.113.1', check: { kind: 'http-content', port: 80, regex: '(' } }),
    /\/health\/check\/regex: is not a valid regular expression/,
  ],
  [
    'a health interval under the 50 ms floor',
    (c) => (c.health = { target: '203.0.113.1', timers: { interval: 1, response: 0.5, retries: 3 } }),
    /\/health\/timers\/interval: must be >= 50/,
  ],
  [
    'a health response under the 10 ms floor',
    (c) => (c.health = { target: '203.0.113.1', timers: { interval: 100, response: 1, retries: 3 } }),
    /\/health\/timers\/response: must be >= 10/,
  ],
  [
    'a 2^31 ms interval',
    (c) => (c.health = { target: '203.0.113.1', timers: { interval: 2 ** 31, response: 100, retries: 3 } }),
    /\/health\/timers\/interval: must be <= 3600000/,
  ],
  ['health with neither target nor targets', (c) => (c.health = { check: { kind: 'icmp' } }), /\/health\/target: is required \(or targets\)/],
  [
    'health with both target and targets',
    (c) => (c.health = { target: '203.0.113.1', targets: ['203.0.113.2'] }),
    /\/health\/targets: give target or targets, not both/,
  ],
  ['health targets repeated', (c) => (c.health = { targets: ['203.0.113.1', '203.0.113.1'] }), /\/health\/targets/],
  ['a node name with a space', (c) => (c.name = 'node one'), /\/name: must match pattern/],
];

for (const [name, mutate, re] of bad) {
  t.test(`refused: ${name}`, async (t) => {
    const c = good();
    mutate(c);
    const err = t.throws(() => validateBalancerConfig(c)) as unknown as ConfigError;
    t.type(err, ConfigError);
    t.equal(err.code, 'FWLB_CONFIG_INVALID');
    t.match(err.message, re);
  });
}

t.test('Redis options: TLS reaches the sentinels too, and commands time out', async (t) => {
  const { redisOptions } = await import('@fwlb/session-table');
  const pem = () => Buffer.from('PEM');
  const s = redisOptions({ node: 'ob', sentinels: [{ host: '10.99.0.1', port: 26379 }], password: 'pw', tls: true, tlsCaFile: '/ca.pem' }, {}, pem).options;
  t.equal(s.enableTLSForSentinelMode, true, 'the sentinels are spoken to over TLS (no AUTH in clear)');
  t.same(s.sentinelTLS, { ca: Buffer.from('PEM') }, 'with the same CA');
  t.same(s.tls, { ca: Buffer.from('PEM') });
  t.equal(s.sentinelPassword, 'pw');
  const plain = redisOptions({ node: 'ob', sentinels: [{ host: '10.99.0.1', port: 26379 }] }).options;
  t.notOk(plain.enableTLSForSentinelMode, 'no TLS configured: none to the sentinels');
  const u = redisOptions({ node: 'ob', url: 'rediss://r:6380' });
  t.equal(u.url, 'rediss://r:6380');
  t.same(u.options.tls, {}, 'rediss:// turns TLS on');
  t.equal(u.options.commandTimeout, 5000, 'a stuck Redis fails the command instead of stalling the caller');
  t.equal(u.options.enableOfflineQueue, false);
  t.equal(u.options.enableAutoPipelining, true, "a flush's per-bucket calls leave in one write per tick");
});

t.test('Redis Cluster: seed nodes instead of a url; one mode only; each node spoken to as a standalone server', async (t) => {
  const { clusterOptions } = await import('@fwlb/session-table');
  const nodes = [{ host: '10.99.0.1', port: 7000 }];
  t.same(validateBalancerConfig({ ...good(), sessionTable: { cluster: nodes } }).sessionTable!.cluster, nodes);
  t.match(err({ ...good(), sessionTable: { cluster: nodes, url: 'redis://r:6379' } }), /give one of url, sentinels and cluster, not url and cluster/);
  t.match(err({ ...good(), sessionTable: { cluster: [] } }), /cluster/, 'at least one node');
  t.match(err({ ...good(), sessionTable: { cluster: [{ host: 'r', port: 7000, db: 1 }] } }), /db/, 'an unknown key is refused, naming it');
  const o = clusterOptions({ node: 'ob', cluster: nodes, password: 'pw', tls: true, tlsCaFile: '/ca.pem' }, {}, () => Buffer.from('PEM'));
  t.equal(o.redisOptions!.password, 'pw', 'AUTH on every node');
  t.same(o.redisOptions!.tls, { ca: Buffer.from('PEM') }, 'TLS to every node, with the CA');
  t.equal(o.redisOptions!.commandTimeout, 5000, 'commands time out');
  t.equal(o.enableAutoPipelining, false, 'no pipelines a failover could split (MOVED for part of one)');
  t.notOk('enableAutoPipelining' in o.redisOptions!, 'nor per node');
  t.equal(o.enableOfflineQueue, false, 'and fail fast while the cluster is away');
  t.equal(o.scaleReads, 'master', 'reads from masters only (a replica lags)');
});

t.test('sync groups: a name per firewall; a group of one is refused, naming the field', async (t) => {
  const base = { role: 'outside', sideInterface: 'cli0', hash: { seed: 1 } };
  const fws = (g: (string | undefined)[]) =>
    g.map((syncGroup, i) => ({ id: `fw${i + 1}`, nextHop: `172.16.${i + 1}.2`, interface: `fw${i + 1}`, ...(syncGroup ? { syncGroup } : {}) }));
  const ok = validateBalancerConfig({ ...base, firewalls: fws(['a', 'a', undefined]) });
  t.same(
    ok.firewalls.map((f) => f.syncGroup),
    ['a', 'a', undefined],
  );
  t.match(err({ ...base, firewalls: fws(['a', 'b', 'b']) }), /\/firewalls\/0\/syncGroup: sync group "a" has no other firewall/);
  t.match(err({ ...base, firewalls: fws(['a a', 'a a']) }), /\/firewalls\/0\/syncGroup/);
});

t.test('NAT pools: prefixes of one firewall each, host bits clear, no next hop inside; the field is named', async (t) => {
  const pools = (a: string[], b: string[] = []) => ({
    ...good(),
    firewalls: [
      { ...good().firewalls[0], natPools: a },
      { ...good().firewalls[1], natPools: b },
    ],
  });
  const ok = validateBalancerConfig(pools(['10.96.1.0/24', '192.0.2.7'], ['10.96.2.0/24']));
  t.same(
    ok.firewalls.map((f) => f.natPools),
    [['10.96.1.0/24', '192.0.2.7'], ['10.96.2.0/24']],
  );
  t.same(validateBalancerConfig(good()).firewalls[0].natPools, [], 'none unless given');
  t.match(err(pools(['10.96.1.7/24'])), /\/firewalls\/0\/natPools\/0: 10\.96\.1\.7\/24 has host bits set: did you mean 10\.96\.1\.0\/24\?/);
  t.match(err(pools(['10.96.1.0/33'])), /\/firewalls\/0\/natPools\/0: .*prefix length must be 0 to 32/);
  t.match(err(pools(['10.96.1.300/24'])), /\/firewalls\/0\/natPools\/0: .*not an IPv4 address or prefix/);
  t.match(
    err(pools(['10.96.0.0/16'], ['10.96.2.0/24'])),
    /\/firewalls\/1\/natPools\/0: 10\.96\.2\.0\/24 overlaps 10\.96\.0\.0\/16 \(\/firewalls\/0\/natPools\/0, firewall fw1\)/,
  );
  t.match(err(pools(['172.16.2.0/24'])), /\/firewalls\/0\/natPools\/0: 172\.16\.2\.0\/24 holds firewall fw2's next hop 172\.16\.2\.2/);
  t.match(err(pools(['10.96.1.0/24', '10.96.1.0/24'])), /\/firewalls\/0\/natPools/, 'a pool twice is refused');
  t.match(err({ ...good(), firewalls: [{ ...good().firewalls[0], natPools: '10.96.1.0/24' }] }), /\/firewalls\/0\/natPools: must be array/);
  // IPv6 pools: with nextHop6 on every firewall; canonical; overlaps only within a family.
  const six = (a: string[], b: string[] = []) => ({
    ...good(),
    firewalls: [
      { ...good().firewalls[0], nextHop6: '2001:db8:17:1::2', natPools: a },
      { ...good().firewalls[1], nextHop6: '2001:db8:17:2::2', natPools: b },
    ],
  });
  const ok6 = validateBalancerConfig(six(['2001:DB8:96:1:0::/64', '10.96.1.0/24'], ['2001:db8:96:2::7', '2001:db8:96::/128']));
  t.same(
    ok6.firewalls.map((f) => f.natPools),
    [
      ['2001:db8:96:1::/64', '10.96.1.0/24'],
      ['2001:db8:96:2::7', '2001:db8:96::'],
    ],
    'IPv6 pools in RFC 5952 form; a host without /128',
  );
  t.match(err(six(['2001:db8:96:1::7/64'])), /\/firewalls\/0\/natPools\/0: 2001:db8:96:1::7\/64 has host bits set: did you mean 2001:db8:96:1::\/64\?/);
  t.match(err(six(['2001:db8:96:1::/129'])), /\/firewalls\/0\/natPools\/0: .*prefix length must be 0 to 128/);
  t.match(err(six(['2001:db8:96::/48'], ['2001:db8:96:2::/64'])), /\/firewalls\/1\/natPools\/0: 2001:db8:96:2::\/64 overlaps 2001:db8:96::\/48/);
  t.match(err(six(['2001:db8:17::/48'])), /\/firewalls\/0\/natPools\/0: 2001:db8:17::\/48 holds firewall fw1's next hop 2001:db8:17:1::2/);
  t.match(err(six(['2001:db8:96:1::g/64'])), /\/firewalls\/0\/natPools\/0: .*not an IPv6 address or prefix/);
  t.match(err(pools(['2001:db8:96:1::/64'])), /\/firewalls\/0\/natPools\/0: 2001:db8:96:1::\/64 is IPv6, and firewall fw1 has no nextHop6/);
  const all = (x: string) => parsePrefix(x) as Prefix;
  t.notOk(prefixesOverlap(all('::/0'), all('0.0.0.0/0')), 'an IPv6 prefix and an IPv4 one never overlap');
  t.ok(
    prefixesOverlap(all('::/0'), all('2001:db8::/32')) &&
      prefixHas(all('2001:db8:96::/48'), '2001:db8:96:ffff::1') &&
      !prefixHas(all('2001:db8:96::/48'), '2001:db8:97::1'),
  );
});

t.test('IPv6 next hops: on every firewall or none, unicast, canonical; the field is named', async (t) => {
  const hops = (a?: string, b?: string) => ({
    ...good(),
    firewalls: [
      { ...good().firewalls[0], ...(a ? { nextHop6: a } : {}) },
      { ...good().firewalls[1], ...(b ? { nextHop6: b } : {}) },
    ],
  });
  t.same(
    validateBalancerConfig(hops('2001:DB8:0:1::0002', 'fe80::2')).firewalls.map((f) => f.nextHop6),
    ['2001:db8:0:1::2', 'fe80::2'],
    'kept in the RFC 5952 form',
  );
  t.same(
    validateBalancerConfig(good()).firewalls.map((f) => f.nextHop6),
    [null, null],
    'none unless given: IPv6 is not steered',
  );
  t.match(err(hops('2001:db8:1::2')), /\/firewalls\/1\/nextHop6: is required: fw1 has one, and every firewall must carry IPv6 or none/);
  t.match(err(hops('2001:db8::1::2', '2001:db8:2::2')), /\/firewalls\/0\/nextHop6: must be a valid ipv6 address/);
  t.match(err(hops('192.0.2.1', '2001:db8:2::2')), /\/firewalls\/0\/nextHop6: must be a valid ipv6 address/);
  t.match(err(hops('ff02::2', '2001:db8:2::2')), /\/firewalls\/0\/nextHop6: ff02::2 is not a unicast address/);
  t.match(
    err({
      ...hops('fe80::2', 'fe80::2'),
      firewalls: [
        { ...good().firewalls[0], nextHop6: 'fe80::2', interface: 'tr0', mac: '02:00:00:00:00:01' },
        { ...good().firewalls[1], nextHop6: 'FE80::2', interface: 'tr0', mac: '02:00:00:00:00:02' },
      ],
    }),
    /\/firewalls\/1\/nextHop6: duplicate next hop fe80::2 on tr0 \(also \/firewalls\/0\/nextHop6\)/,
  );
});

t.test('health targets: IPv4 or IPv6; a malformed one is refused naming the field', async (t) => {
  t.same(validateBalancerConfig({ ...good(), health: { targets: ['2001:db8:5::1', '203.0.113.1'] } }).health!.targets, ['2001:db8:5::1', '203.0.113.1']);
  t.match(err({ ...good(), health: { target: '2001:db8::g' } }), /\/health\/target: must be a valid IPv4 or IPv6 address/);
  t.match(err({ ...good(), health: { targets: ['203.0.113.1', '2001:db8:::1'] } }), /\/health\/targets\/1: must be a valid IPv4 or IPv6 address/);
});
