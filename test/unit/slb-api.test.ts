// Unit: the SLB REST API through app.inject(), with a fake nft, fake VIP addresses and fake monitors in front of the kernel.
import { t } from 'tap';
import type { FakeSlbKernel } from '../helpers/fake-slb-kernel';
import { setup, TOKEN, web } from '../helpers/slb-fixture';

const auth = { authorization: `Bearer ${TOKEN}` };

/** The DNAT targets of a VIP's rule in the fake kernel, in slot order. */
const targets = (nft: FakeSlbKernel, vipPort: number): string[] => nft.targets(vipPort);

t.test('start: the VIP address, one DNAT rule with weighted slots, counters', async (t) => {
  const { nft, addresses, s, app } = setup();
  await s.start();
  t.same([...addresses.addrs], ['203.0.113.100']);
  t.same(targets(nft, 80).sort(), ['10.20.0.11:8080', '10.20.0.12:8080', '10.20.0.12:8080']);
  const res = await app.inject({ method: 'GET', url: '/vips/web/members' });
  t.equal(res.statusCode, 200);
  t.same(
    res.json().map((m: any) => [m.address, m.health.up, m.slots]),
    [
      ['10.20.0.11', true, 1],
      ['10.20.0.12', true, 2],
    ],
  );
  t.same(Object.keys(res.json()[0].counters).sort(), ['at', 'bytes', 'newSessions', 'packets']);
  const again = await s.reconcile();
  t.equal(again.nftCommands, 0, 'a second reconcile writes nothing');
});

t.test('mutations need the bearer token', async (t) => {
  const { s, app, nft } = setup();
  await s.start();
  const n = nft.batches.length;
  const res = await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), id: 'tls', port: 443 } });
  t.equal(res.statusCode, 401);
  t.equal(res.json().code, 'FWLB_UNAUTHORIZED');
  t.equal(nft.batches.length, n, 'nothing applied');
});

t.test('bad input: 400 naming the field, and the kernel is unchanged', async (t) => {
  const { s, app, nft, addresses } = setup();
  await s.start();
  const n = nft.batches.length;
  const cases: [string, string, unknown, RegExp][] = [
    ['POST', '/vips', { ...web(), id: 'web2' }, /\/port: overlaps VIP "web" on 203.0.113.100:80\/tcp/],
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, members: [{ address: '10.20.0.11', port: 0 }] }, /\/members\/0\/port: must be >= 1/],
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, scheduler: 'leastconn' }, /\/scheduler: must be equal to one of the allowed values/],
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, extra: 1 }, /\/extra: unknown key/],
    ['PUT', '/vips/web', { ...web(), id: 'other' }, /\/id: must be "web"/],
    ['POST', '/vips/web/members', { address: '10.20.0.13', port: 0 }, /\/port: must be >= 1/],
    ['POST', '/vips/web/members', { address: '10.20.0.11', port: 8080 }, /duplicate member 10.20.0.11:8080/],
    ['PATCH', '/vips/web/members/10.20.0.11:8080', { state: 'gone' }, /\/state: must be equal to one of the allowed values/],
    // A regex that does not compile must not crash the process (nor a saved VIP crash-loop it).
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, check: { kind: 'http-content', regex: '(' } }, /\/check\/regex: is not a valid regular expression/],
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, timers: { interval: 2 ** 31, response: 100, retries: 2 } }, /\/timers\/interval: must be <= 3600000/],
    ['POST', '/vips', { ...web(), id: 'tls', port: 443, timers: { interval: 1e-9, response: 1e-10, retries: 2 } }, /\/timers\/interval: must be >= 50/],
    ['POST', '/vips', { ...web(), id: 'any', address: '0.0.0.0' }, /\/address: 0\.0\.0\.0 is unspecified/],
    ['POST', '/vips', { ...web(), id: 'mc', address: '224.0.0.1' }, /\/address: 224\.0\.0\.1 is multicast/],
    ['POST', '/vips/web/members', { address: '127.0.0.1', port: 22 }, /\/address: 127\.0\.0\.1 is loopback/],
    ['POST', '/vips/web/members', { address: '255.255.255.255', port: 80 }, /\/address: 255\.255\.255\.255 is reserved or broadcast/],
  ];
  for (const [method, url, payload, want] of cases) {
    const res = await app.inject({ method: method as any, url, payload: payload as any, headers: auth });
    t.equal(res.statusCode, 400, `${method} ${url} ${JSON.stringify(payload)}`);
    t.equal(res.json().code, 'FWLB_BAD_REQUEST');
    t.match(res.json().message, want);
  }
  t.equal(nft.batches.length, n, 'no transaction was applied');
  t.same([...addresses.addrs], ['203.0.113.100'], 'no address was added');
  t.equal(s.vips().length, 1);
});

t.test('a failed transaction leaves kernel, addresses and state as they were', async (t) => {
  const { s, app, nft, addresses } = setup();
  await s.start();
  const before = JSON.stringify([...nft.rules]);
  nft.failNext();
  const res = await app.inject({
    method: 'POST',
    url: '/vips',
    payload: { ...web(), id: 'dns', address: '203.0.113.53', port: 53, protocol: 'udp' },
    headers: auth,
  });
  t.equal(res.statusCode, 500);
  t.equal(res.json().code, 'FWLB_APPLY_FAILED');
  t.same([...addresses.addrs], ['203.0.113.100'], 'the address added for the new VIP was removed again');
  t.equal(JSON.stringify([...nft.rules]), before, 'rules unchanged');
  t.same(
    s.vips().map((v) => v.id),
    ['web'],
    'state unchanged',
  );
  const ok = await app.inject({
    method: 'POST',
    url: '/vips',
    payload: { ...web(), id: 'dns', address: '203.0.113.53', port: 53, protocol: 'udp' },
    headers: auth,
  });
  t.equal(ok.statusCode, 201, 'the same change goes through once the kernel takes it');
  t.same([...addresses.addrs].sort(), ['203.0.113.100', '203.0.113.53']);
});

t.test('new members start down and join after passing checks; drain and health leave the map', async (t) => {
  const { s, app, nft, monitors, addresses } = setup();
  await s.start();
  const add = await app.inject({ method: 'POST', url: '/vips/web/members', payload: { address: '10.20.0.13', port: 8080 }, headers: auth });
  t.equal(add.statusCode, 201);
  t.equal(add.json().health.up, false, 'a new member is down until checked');
  t.notOk(targets(nft, 80).includes('10.20.0.13:8080'), 'not in the map yet');
  const key = [...monitors.keys()].find((k) => k.includes('10.20.0.13'))!;
  monitors.get(key)!.emit(true);
  await s.reconcile();
  t.ok(targets(nft, 80).includes('10.20.0.13:8080'), 'in the map once up');

  // A member change holds its VIP's address as it is: it reads no address from the kernel.
  let addressReads = 0;
  const read = addresses.labelledAddresses;
  addresses.labelledAddresses = (...a) => (addressReads++, read(...a));
  const drain = await app.inject({ method: 'PATCH', url: '/vips/web/members/10.20.0.12:8080', payload: { state: 'drain' }, headers: auth });
  t.equal(drain.statusCode, 200);
  t.equal(addressReads, 0, 'no address read for a member change');
  t.equal(drain.json().state, 'drain');
  t.same(targets(nft, 80).sort(), ['10.20.0.11:8080', '10.20.0.13:8080'], 'a drained member takes no new sessions');

  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.11'))!)!.emit(false);
  await s.reconcile();
  t.same(targets(nft, 80), ['10.20.0.13:8080'], 'a DOWN member leaves the map');
  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.13'))!)!.emit(false);
  await s.reconcile();
  t.same(targets(nft, 80), [], 'no live member: no DNAT at all');
});

t.test('a member that goes DOWN while a full pass waits for the kernel still leaves the map (CI: the event was lost)', async (t) => {
  const { s, nft, monitors, addresses } = setup();
  await s.start();
  t.ok(targets(nft, 80).includes('10.20.0.11:8080'));
  // Hold the full pass after it rendered its fragments (at its address step), fire the DOWN, then let it finish.
  let hit!: () => void;
  const reached = new Promise<void>((r) => (hit = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const real = addresses.labelledAddresses;
  addresses.labelledAddresses = async (...a) => {
    hit();
    await gate;
    return real(...a);
  };
  const pass = s.reconcile();
  await reached;
  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.11'))!)!.emit(false);
  release();
  await pass;
  addresses.labelledAddresses = real;
  await s.tick();
  t.same([...new Set(targets(nft, 80))], ['10.20.0.12:8080'], 'the next pass took the DOWN member out');
});

t.test('shared RIP: one monitor per (RIP, port, check) across VIPs; delete stops what nobody uses', async (t) => {
  const { s, app, monitors, addresses } = setup();
  await s.start();
  const tls = {
    ...web(),
    id: 'tls',
    port: 443,
    members: [
      { address: '10.20.0.11', port: 8080 },
      { address: '10.20.0.11', port: 8443 },
    ],
  };
  t.equal((await app.inject({ method: 'POST', url: '/vips', payload: tls, headers: auth })).statusCode, 201);
  t.equal(monitors.size, 3, '10.20.0.11:8080 is checked once for both VIPs, 10.20.0.11:8443 apart');
  const get = (await app.inject({ method: 'GET', url: '/vips/tls' })).json();
  t.equal(get.members[0].health.up, true, 'the shared member is already known up');
  const del = await app.inject({ method: 'DELETE', url: '/vips/tls', headers: auth });
  t.equal(del.statusCode, 204);
  const stopped = [...monitors.entries()].filter(([, m]) => m.stopped).map(([k]) => JSON.parse(k)[1]);
  t.same(stopped, [8443], 'only the monitor nobody uses is stopped');
  t.same([...addresses.addrs], ['203.0.113.100'], 'the VIP address stays: web still uses it');
  t.equal((await app.inject({ method: 'DELETE', url: '/vips/web', headers: auth })).statusCode, 204);
  t.same([...addresses.addrs], [], 'the last VIP on the address takes it away');
  t.equal((await app.inject({ method: 'GET', url: '/vips/web' })).json().code, 'FWLB_NO_SUCH_VIP');
  t.equal((await app.inject({ method: 'DELETE', url: '/vips/web/members/1.2.3.4:1', headers: auth })).statusCode, 404);
});

t.test('source hash renders a jhash over the client address with the configured seed', async (t) => {
  const { s, app, nft } = setup();
  await s.start();
  const res = await app.inject({ method: 'PUT', url: '/vips/web', payload: { ...web(), scheduler: 'sh' }, headers: auth });
  t.equal(res.statusCode, 200);
  const rule = nft.rules.get('v_web')![0] as any[];
  const key = rule.find((x: any) => x.dnat).dnat.addr.map.key.concat[2];
  t.same(key.jhash.expr, { payload: { protocol: 'ip', field: 'saddr' } });
  t.equal(key.jhash.seed, 9);
  t.equal(key.jhash.mod, 61);
});

t.test('50 concurrent VIP mutations: every 201 is in the kernel and in the state file', async (t) => {
  let saved: any[] = [];
  const { s, app, nft } = setup((v) => void (saved = v as any[]));
  await s.start();
  const vip = (i: number) => ({ ...web(), id: `v${i}`, address: `203.0.113.${10 + i}`, members: [{ address: '10.20.0.11', port: 8080 }] });
  const res = await Promise.all(Array.from({ length: 50 }, (_, i) => app.inject({ method: 'POST', url: '/vips', payload: vip(i), headers: auth })));
  t.same(
    res.map((r) => r.statusCode),
    Array(50).fill(201),
    'all 50 answered 201',
  );
  const ids = s
    .vips()
    .map((v) => v.id)
    .sort();
  t.equal(ids.length, 51, 'and all 50 exist, with the first');
  t.equal([...nft.rules].filter(([c, r]) => c.startsWith('v_') && r.length === 1).length, 51, 'one VIP chain with its rule each in the kernel');
  t.same(saved.map((v) => v.id).sort(), ids, 'and each is in the state file');
  // Concurrent member changes on one VIP: adds and patches interleaved.
  const adds = Array.from({ length: 20 }, (_, i) =>
    app.inject({ method: 'POST', url: '/vips/web/members', payload: { address: `10.20.1.${i + 1}`, port: 8080 }, headers: auth }),
  );
  const patches = [
    app.inject({ method: 'PATCH', url: '/vips/web/members/10.20.0.11:8080', payload: { state: 'drain' }, headers: auth }),
    app.inject({ method: 'PATCH', url: '/vips/web/members/10.20.0.12:8080', payload: { weight: 5 }, headers: auth }),
  ];
  const all = await Promise.all([...adds, ...patches]);
  t.ok(
    all.every((r) => r.statusCode === 201 || r.statusCode === 200),
    'every member change accepted',
  );
  const w = s.vip('web');
  t.equal(w.members.length, 22, 'none lost');
  t.equal(w.members.find((m) => m.address === '10.20.0.11')!.state, 'drain');
  t.equal(w.members.find((m) => m.address === '10.20.0.12')!.weight, 5);
  t.equal(saved.find((v) => v.id === 'web').members.length, 22);
});

t.test('the VIP limit is the same for the API and the config file', async (t) => {
  const { MAX_VIPS } = await import('@fwlb/slb');
  const { slbSchema } = await import('@fwlb/config');
  t.equal((slbSchema as any).properties.vips.maxItems, MAX_VIPS);
});

t.test('a state file that cannot be written: 500 FWLB_SAVE_FAILED, the alarm stays until a save succeeds', async (t) => {
  let fail = true;
  const { s, app } = setup(() => {
    if (fail) throw new Error('EROFS: read-only file system');
  });
  await s.start();
  const r = await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), id: 'v1', port: 81 }, headers: auth });
  t.equal(r.statusCode, 500);
  t.equal(r.json().code, 'FWLB_SAVE_FAILED');
  t.match(r.json().message, /live in the kernel.*EROFS/);
  const h = (await app.inject({ method: 'GET', url: '/health' })).json();
  t.equal(h.status, 'degraded');
  t.match(h.alarms[0], /state file not written/);
  fail = false;
  await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), id: 'v2', port: 82 }, headers: auth });
  t.equal((await app.inject({ method: 'GET', url: '/health' })).json().status, 'ok', 'the next successful save clears it');
});

t.test('reads answer from memory: 1,000 GETs read nothing from the kernel', async (t) => {
  const { s, app, nft } = setup();
  await s.start();
  const reads0 = nft.reads;
  const urls = ['/vips', '/vips/web', '/vips/web/members', '/health', '/status'];
  for (let i = 0; i < 1000; i++) t.equal((await app.inject({ method: 'GET', url: urls[i % urls.length] })).statusCode, 200);
  t.equal(nft.reads - reads0, 0, 'no nft run for a GET');
  await s.refreshCounters();
  t.equal(nft.reads - reads0, 1, 'the background refresh is what reads the counters');
  t.ok((await app.inject({ method: 'GET', url: '/vips/web' })).json().counters.at > 0, 'and the view says when');
});

t.test('pool panic (fail open): below the threshold every enabled member serves; 0 keeps fail closed', async (t) => {
  const { s, app, nft, monitors } = setup();
  await s.start();
  const three = { ...web(), panicThreshold: 0.5, members: [1, 2, 3].map((k) => ({ address: `10.20.0.1${k}`, port: 8080 })) };
  t.equal((await app.inject({ method: 'PUT', url: '/vips/web', payload: three, headers: auth })).statusCode, 200);
  const down = async (addr: string) => {
    monitors.get([...monitors.keys()].find((k) => k.includes(addr))!)!.emit(false);
    await s.reconcile();
  };
  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.13'))!)!.emit(true); // the new member passes its checks
  await down('10.20.0.11');
  t.same(targets(nft, 80).sort(), ['10.20.0.12:8080', '10.20.0.13:8080'], 'one of three down: believed');
  t.equal((await app.inject({ method: 'GET', url: '/health' })).json().status, 'ok');
  await down('10.20.0.12');
  t.same(targets(nft, 80).sort(), ['10.20.0.11:8080', '10.20.0.12:8080', '10.20.0.13:8080'], 'two of three down: panic, all enabled members serve');
  const h = (await app.inject({ method: 'GET', url: '/health' })).json();
  t.equal(h.status, 'degraded');
  t.match(h.alarms.join(), /VIP web in panic: 1 of 3 enabled members up \(threshold 50%\)/);
  await app.inject({ method: 'PATCH', url: '/vips/web/members/10.20.0.13:8080', payload: { state: 'drain' }, headers: auth });
  t.same(targets(nft, 80).sort(), ['10.20.0.11:8080', '10.20.0.12:8080'], 'a drained member stays out even in panic');
  const closed = { ...three, panicThreshold: 0 };
  t.equal((await app.inject({ method: 'PUT', url: '/vips/web', payload: closed, headers: auth })).statusCode, 200);
  t.same(targets(nft, 80), ['10.20.0.13:8080'], 'threshold 0: the down members stay out, only the one up serves (with none up: RST)');
});

t.test('SLB mutations are audited, accepted and refused', async (t) => {
  const { s, app, audits } = setup();
  await s.start();
  await app.inject({ method: 'PATCH', url: '/vips/web/members/10.20.0.11:8080', payload: { state: 'drain' }, headers: auth });
  await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), port: 0 }, headers: auth });
  t.match(audits, [
    {
      method: 'PATCH',
      route: '/vips/:id/members/:member',
      status: 200,
      body: { state: 'drain' },
      before: { address: '10.20.0.11', state: 'enabled' },
      after: { address: '10.20.0.11', state: 'drain' },
    },
    { method: 'POST', route: '/vips', status: 400, code: 'FWLB_BAD_REQUEST' },
  ]);
  t.notOk('after' in audits[1], 'a refused change has no after');
  await app.inject({ method: 'DELETE', url: '/vips/web', headers: auth });
  t.match(audits[2], { method: 'DELETE', status: 204, before: { id: 'web', port: 80 } }, 'a deletion records what it deleted');
});

t.test('an IPv6 VIP: its own ip6 table, declared by the first one, taken back with a change that fails', async (t) => {
  const { s, app, nft, addresses, monitors } = setup();
  await s.start();
  t.equal(nft.tables.ip6, null, 'no IPv6 VIP: no ip6 table');
  const web6 = {
    ...web(),
    id: 'web6',
    address: '2001:DB8:5::100',
    members: [
      { address: '2001:db8:20::11', port: 8080 },
      { address: '2001:db8:20:0:0:0:0:12', port: 8080, weight: 2 },
    ],
  };
  const ipBefore = JSON.stringify([...nft.rules].filter(([c]) => !c.startsWith('ip6 ')));
  nft.failNext();
  const failed = await app.inject({ method: 'POST', url: '/vips', payload: web6, headers: auth });
  t.equal(failed.statusCode, 500, 'the transaction fails');
  t.equal(nft.tables.ip6, null, 'the ip6 table declared for it is gone again');
  t.same([...addresses.addrs], ['203.0.113.100'], 'and so is its address');
  const res = await app.inject({ method: 'POST', url: '/vips', payload: web6, headers: auth });
  t.equal(res.statusCode, 201, res.body);
  t.equal(res.json().address, '2001:db8:5::100', 'RFC 5952 form');
  t.same([...nft.tables.ip6!.pools.values()], [], 'new members: down until checked');
  for (const [k, h] of monitors) if (k.includes('2001:db8:20::')) h.emit(true);
  await s.reconcile();
  t.same([...addresses.addrs].sort(), ['2001:db8:5::100', '203.0.113.100']);
  const ip6 = nft.tables.ip6!;
  t.ok(ip6.chains.has('v_web6') && !nft.state!.chains.has('v_web6'), 'the VIP chain is in the ip6 table, not the ip one');
  t.same([...ip6.dispatch.keys()], [JSON.stringify(['2001:db8:5::100', 'tcp', 80])]);
  t.same(
    [...ip6.pools.values()].map((p) => [...p.values()].sort()),
    [['[2001:db8:20::11]:8080', '[2001:db8:20::12]:8080', '[2001:db8:20::12]:8080']],
    'weighted slots',
  );
  const rule = nft.rules.get('ip6 v_web6')![0];
  t.same(rule.find((x: any) => x.dnat)?.dnat.family, 'ip6', 'an ip6 DNAT');
  t.same(rule[1].set.elem.concat[0], { payload: { protocol: 'ip6', field: 'daddr' } }, 'counted by the IPv6 destination');
  t.equal(JSON.stringify([...nft.rules].filter(([c]) => !c.startsWith('ip6 '))), ipBefore, 'the ip table did not change');
  t.equal((await s.reconcile()).nftCommands, 0, 'a full pass over both tables then writes nothing');
  t.same(JSON.parse(JSON.stringify(s.status().table)), { family: 'ip', name: 'fwlb_slb', families: ['ip', 'ip6'] });
  const m = await app.inject({
    method: 'PATCH',
    url: `/vips/web6/members/${encodeURIComponent('[2001:DB8:20::12]:8080')}`,
    payload: { state: 'drain' },
    headers: auth,
  });
  t.equal(m.statusCode, 200, 'a member named in another text form');
  t.same(
    [...nft.tables.ip6!.pools.values()].map((p) => [...p.values()]),
    [['[2001:db8:20::11]:8080']],
    'drained: out of the pool',
  );
  t.equal((await app.inject({ method: 'DELETE', url: '/vips/web6', headers: auth })).statusCode, 204);
  t.notOk(nft.tables.ip6!.chains.has('v_web6'), 'deleted from the ip6 table');
  t.same([...addresses.addrs], ['203.0.113.100']);
});

t.test("a VIP that would capture one of the node's own services is refused, naming the field", async (t) => {
  const { parseProcNet, vipConflict } = await import('@fwlb/slb');
  // /proc/net/tcp and tcp6 as the kernel prints them: 32-bit words in host (little-endian) order.
  const tcp = [
    '  sl  local_address rem_address   st',
    '   0: 0100A8C0:0016 00000000:0000 0A 0',
    '   1: 00000000:1F90 00000000:0000 0A 0',
    '   2: 0100A8C0:C350 0200A8C0:0050 01 0',
  ].join('\n');
  t.same(
    parseProcNet(tcp, 'tcp'),
    [
      { protocol: 'tcp', address: '192.168.0.1', port: 22 },
      { protocol: 'tcp', address: '0.0.0.0', port: 8080 },
    ],
    'listening sockets only, addresses decoded',
  );
  const tcp6 = [
    '  sl  local_address                         remote_address                        st',
    '   0: B80D0120000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 0',
  ].join('\n');
  t.same(parseProcNet(tcp6, 'tcp'), [{ protocol: 'tcp', address: '2001:db8::1', port: 53 }]);
  const udp = ['   sl  local_address rem_address   st', '  10: 00000000:0035 00000000:0000 07 0'].join('\n');
  t.same(parseProcNet(udp, 'udp'), [{ protocol: 'udp', address: '0.0.0.0', port: 53 }], 'an unconnected UDP socket');
  const here = new Set(['192.0.2.5', '2001:db8::5']);
  const socks = [...parseProcNet(tcp, 'tcp'), { protocol: 'udp' as const, address: '::', port: 53 }];
  t.equal(
    vipConflict({ address: '192.0.2.5', port: 8080, protocol: 'tcp' }, here, socks),
    "192.0.2.5 is this node's own address, and 0.0.0.0:8080/tcp serves on it: the VIP would capture that service",
  );
  t.match(vipConflict({ address: '192.0.2.5', port: 53, protocol: 'udp' }, here, socks), /\[::\]:53\/udp/, 'a dual-stack socket on :: covers IPv4');
  t.equal(vipConflict({ address: '192.0.2.5', port: 22, protocol: 'tcp' }, here, socks), null, 'a socket bound to another address does not');
  t.equal(vipConflict({ address: '192.0.2.5', port: 80, protocol: 'tcp' }, here, socks), null, 'a port nothing takes is free');
  t.equal(vipConflict({ address: '203.0.113.9', port: 8080, protocol: 'tcp' }, here, socks), null, 'an address the node does not hold is free');

  let seen: string[] = [];
  const { s, app } = setup(undefined, (vipAddresses) => {
    seen = [...vipAddresses];
    return { addresses: new Set(['192.0.2.5']), sockets: [{ protocol: 'tcp', address: '0.0.0.0', port: 22 }] };
  });
  await s.start();
  const bad = await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), id: 'ssh', address: '192.0.2.5', port: 22 }, headers: auth });
  t.equal(bad.statusCode, 400, 'refused');
  t.match(bad.json().message, /\/address: 192\.0\.2\.5 is this node's own address, and 0\.0\.0\.0:22\/tcp serves on it/);
  t.same(seen, ['203.0.113.100'], "the VIP addresses fwlb holds are not the node's own");
  t.same(
    s.vips().map((v) => v.id),
    ['web'],
    'nothing changed',
  );
  const ok = await app.inject({ method: 'POST', url: '/vips', payload: { ...web(), id: 'www', address: '192.0.2.5', port: 80 }, headers: auth });
  t.equal(ok.statusCode, 201, 'the same address on a port nothing takes is a VIP');
});
