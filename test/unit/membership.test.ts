// Unit: firewall membership (admin, own health, own link, agreement) → who takes new sessions, whose flows keep
// their firewall, and which firewalls are suspect; and how the render turns that into nft rules.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { bucketTable, Membership, renderTable, SYN_SEEN_SECONDS } from '@fwlb/balancer';

const cfg = (sessionTable: boolean, extra: object = {}) =>
  validateBalancerConfig({
    role: 'inside',
    sideInterface: 'srv0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.17.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 42 },
    ...(sessionTable ? { sessionTable: { url: 'redis://127.0.0.1:6379' } } : {}),
    ...extra,
  });

t.test('all up: every firewall takes new sessions and restores its flows', async (t) => {
  const m = new Membership(cfg(false));
  t.same(m.snapshot(), { live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'], suspect: [], agreement: null, panic: null });
});

t.test('table: what each combination of admin, health, link and agreement gives', async (t) => {
  type Case = { name: string; st: boolean; admin?: boolean; up?: boolean; link?: boolean; agreed?: { live: string[]; down: string[] }; want: { live: boolean; restorable: boolean; suspect: boolean } };
  const cases: Case[] = [
    { name: 'disabled: no new sessions, established flows stay', st: false, admin: false, want: { live: false, restorable: true, suspect: false } },
    { name: 'probes fail, no session table: suspect (kept only while heard)', st: false, up: false, want: { live: false, restorable: false, suspect: true } },
    { name: 'link down: re-hashed at once', st: false, link: false, want: { live: false, restorable: false, suspect: false } },
    { name: 'link down even when probes still pass', st: false, up: true, link: false, want: { live: false, restorable: false, suspect: false } },
    { name: 'own probes fail, twin sees it up (agreement): flows keep it', st: true, up: false, agreed: { live: ['fw1', 'fw3'], down: [] }, want: { live: false, restorable: true, suspect: false } },
    { name: 'every node sees it down: suspect', st: true, up: false, agreed: { live: ['fw1', 'fw3'], down: ['fw2'] }, want: { live: false, restorable: false, suspect: true } },
    { name: 'session table but no epoch yet: own view decides', st: true, up: false, want: { live: false, restorable: false, suspect: true } },
    { name: 'own view up, not agreed: no new sessions, flows stay', st: true, agreed: { live: ['fw1', 'fw3'], down: [] }, want: { live: false, restorable: true, suspect: false } },
  ];
  for (const c of cases) {
    const m = new Membership(cfg(c.st));
    if (c.admin !== undefined) m.setAdmin('fw2', c.admin);
    if (c.up !== undefined) m.setHealth('fw2', c.up, 'test');
    if (c.link !== undefined) m.setLink('fw2', c.link);
    if (c.agreed) m.setAgreement({ epoch: 1, ...c.agreed });
    const s = m.snapshot();
    t.same({ live: s.live.includes('fw2'), restorable: s.restorable.includes('fw2'), suspect: s.suspect.includes('fw2') }, c.want, c.name);
    t.same(s.live.filter((x) => x !== 'fw2'), ['fw1', 'fw3'], `${c.name}: the others are untouched`);
  }
});

t.test('setLink reports changes; ownView is health and link', async (t) => {
  const m = new Membership(cfg(false));
  t.equal(m.setLink('fw1', true), false, 'unknown counts as up');
  t.equal(m.setLink('fw1', false), true);
  t.equal(m.setLink('fw1', false), false);
  m.setHealth('fw3', false, 'timeout');
  t.same(m.ownView(), { fw1: false, fw2: true, fw3: false });
  t.throws(() => m.setAdmin('fw9', false), /no firewall fw9/);
});

t.test('render: restore by ct mark for restorable firewalls, restore-if-heard for suspect ones, the side label only on new flows', async (t) => {
  const c = cfg(true);
  const input = { config: c, live: ['fw1', 'fw3'], restorable: ['fw1', 'fw3'], suspect: ['fw2'] };
  const out = renderTable(input, bucketTable(input));
  const rules = out.chains[0].rules.map((r) => JSON.stringify(r));
  const marks = (r: string) => JSON.parse(r).find((s: any) => s.match?.left?.ct?.key === 'mark' && s.match.right.set)?.match.right.set;
  t.same(marks(JSON.stringify(out.labeled.restore)), [65536, 65538], 'restore: fw1 and fw3 only');
  t.same(marks(JSON.stringify(out.labeled['restore-heard'])), [65537], 'restore-heard: fw2, looked up in @heard');
  t.match(JSON.stringify(out.labeled['restore-heard']), /"right":"@heard"/);
  const updates = rules.filter((r) => r.includes('"op":"update"') && r.includes('"@heard"'));
  t.equal(updates.length, 1, 'packets are remembered only from the suspect firewall');
  t.match(updates[0], /"right":"fw2"/);
  const label = rules.filter((r) => r.includes('"label"'));
  t.equal(label.length, 1, 'one rule sets the side label');
  t.match(label[0], /"key":"state"\}\},"right":"new"/, 'and only on a new entry');
  t.notMatch(JSON.stringify(out.labeled['hash-tcp-udp']), /label/, 'hashing (a re-hash of an established flow too) never labels');
  t.same(out.sets![0], { name: 'heard', type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service', 'inet_proto'], timeout: 30, size: 262144 });
  const none = renderTable({ ...input, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'], suspect: [] }, bucketTable(input));
  t.notOk(none.labeled['restore-heard'], 'no suspect firewall: no heard rule');
  // Without a session table nothing reads the label or the events: a new flow pays for neither.
  const plain = renderTable({ ...input, config: cfg(false) }, bucketTable(input));
  t.notMatch(JSON.stringify(plain.chains), /"label"|"event"/, 'no session table: no ct label, no ct event filter');
  t.match(JSON.stringify(out.chains), /"key":"event"/, 'with one: the event filter is there');
  t.notOk(none.chains[0].rules.some((r) => JSON.stringify(r).includes('"@heard"')), 'and nothing is remembered in @heard');
});

t.test('render, fast path (issue 16): an established packet from the side is restored by the first rule, before any fib lookup; forwarded packets never meet a fib lookup', async (t) => {
  const c = cfg(true);
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  const pre = out.chains.find((x) => x.name === 'prerouting')!.rules.map((r) => JSON.stringify(r));
  // The first rule is the side's SYN rule: a packet that is not a SYN fails its second comparison.
  const syn = (r: string) => JSON.parse(r).findIndex((x: any) => x.match?.left?.payload?.field === 'flags' || x.match?.left?.['&']?.[0]?.payload?.field === 'flags');
  t.equal(syn(pre[0]), 2, 'the first rule tests the SYN flag third (after the interface and tcp)');
  t.equal(pre[1], JSON.stringify(out.labeled.restore), 'the second rule is the restore');
  const fib = pre.findIndex((r) => r.includes('"fib"'));
  t.ok(fib > 1, 'the fib lookup (traffic to this node) comes after it');
  t.equal(pre.filter((r) => r.includes('"fib"')).length, 1, 'one fib rule in prerouting');
  const notSide = (r: string) => JSON.parse(r).some((x: any) => x.match?.op === '!=' && x.match.left.meta?.key === 'iifname');
  const exits = pre.map((r, i) => (notSide(r) && JSON.parse(r).some((x: any) => 'accept' in x) ? i : -1)).filter((i) => i >= 0);
  t.equal(exits.length, 2, 'two exits for packets not from the side');
  t.equal(exits[0], 3, 'an established packet from a firewall (ct mark set) leaves at the fourth rule, after one for SYNs from a firewall');
  t.equal(syn(pre[2]), 2, 'which fails at its third comparison when the packet is not a SYN');
  t.match(pre[3], /"ct":\{"key":"mark"\}.*"right":0/, 'the exit tests ct mark != 0');
  t.ok(pre.indexOf(JSON.stringify(out.labeled['learn:fw1'])) > 3, 'learning (ct mark 0) after it');
  const exit = exits[1];
  t.ok(exit > pre.indexOf(JSON.stringify(out.labeled['learn:fw3'])), 'any other packet from a firewall leaves after the learn rules');
  t.ok(exit < pre.indexOf(JSON.stringify(out.labeled['hash-tcp-udp'])) && exit < pre.indexOf(JSON.stringify(out.labeled.pinned)), 'before the side-only rules');
  const input_ = out.chains.find((x) => x.name === 'input')!;
  t.equal(input_.hook, 'input', 'the mark for this node\'s own replies is set on the input hook');
  t.notMatch(JSON.stringify(input_.rules), /fib/, 'without a fib lookup');
  t.same(input_.rules.map((r) => JSON.stringify(r).match(/"value":(\d+)/)?.[1]), ['65536', '65537', '65538'], 'one mark per firewall');
  t.notOk(out.chains.some((x) => x.name === 'local'), 'no prerouting chain for local traffic any more');
});

t.test('render: a SYN never inherits a stale ct mark (a reused 5-tuple meeting the entry of an earlier connection)', async (t) => {
  const c = cfg(true);
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  const pre = out.chains.find((x) => x.name === 'prerouting')!.rules;
  const find = (f: (r: any[]) => boolean) => pre.findIndex((r) => f(r as any[]));
  const iif = (r: any[], op: string) => r.some((x) => x.match?.op === op && x.match.left.meta?.key === 'iifname');
  const setsCtMark0 = (r: any[]) => r.some((x) => x.mangle?.key?.ct?.key === 'mark' && x.mangle.value === 0);
  const verdict = (r: any[]) => r.some((x) => 'accept' in x || 'drop' in x);
  // From the side: SYN or SYN-ACK with a ct mark, unless this node saw that connection's SYN from a firewall.
  const side = find((r) => iif(r, '==') && setsCtMark0(r));
  t.ok(side >= 0, 'a rule clears the ct mark of a SYN from the side');
  const sideRule = pre[side] as any[];
  t.same(sideRule.find((x) => x.match?.left?.payload?.field === 'flags')?.match, { op: 'in', left: { payload: { protocol: 'tcp', field: 'flags' } }, right: 'syn' }, 'any packet with SYN set (SYN, SYN-ACK)');
  t.ok(sideRule.some((x) => x.match?.op === '!=' && x.match.left.ct?.key === 'mark' && x.match.right === 0), 'only when it has a ct mark');
  const seen = sideRule.find((x) => x.match?.right === '@synseen');
  t.equal(seen?.match.op, '!=', 'and this node did not see that SYN arrive from a firewall');
  const ctTuple = (c: any[]) => c.map((e: any) => `${e.ct?.dir ?? ''} ${e.ct?.key}`.trim());
  t.same(ctTuple(seen.match.left.concat), ['original ip saddr', 'original proto-src', 'original ip daddr', 'original proto-dst', 'protocol'], "looked up by conntrack's original tuple (the same for the SYN and its SYN-ACK, NAT or not)");
  t.notOk(verdict(sideRule), 'no verdict: the packet goes on to be steered (pins, hash)');
  t.ok(side < find((r) => r === out.labeled.restore), 'before the restore');
  // From a firewall: a bare SYN clears the mark (learning then takes this firewall) and is remembered.
  const fw = find((r) => iif(r, '!=') && setsCtMark0(r));
  t.ok(fw >= 0, 'a rule clears the ct mark of a SYN from a firewall');
  const fwRule = pre[fw] as any[];
  t.same(fwRule.find((x) => x.match?.left?.['&'])?.match, { op: '==', left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, ['syn', 'ack']] }, right: 'syn' }, 'a bare SYN only (not a SYN-ACK)');
  const clear = fwRule.findIndex((x) => x.mangle?.key?.ct?.key === 'mark' && x.mangle.value === 0);
  const update = fwRule.findIndex((x) => x.set?.op === 'update' && x.set.set === '@synseen');
  t.ok(clear >= 0 && update > clear, 'the mark is cleared before the update (a full set ends the rule, and the clear still counts)');
  t.same(ctTuple(fwRule[update].set.elem.concat), ctTuple(seen.match.left.concat), 'stored by the same original tuple');
  t.notOk(verdict(fwRule), 'no verdict');
  t.ok(fw < find((r) => iif(r, '!=') && verdict(r)), 'before the exit for established packets from a firewall');
  t.ok(fw < find((r) => r === out.labeled['learn:fw1']), 'and before learning, which then takes the firewall it came from');
  t.same(out.sets![1], { name: 'synseen', type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service', 'inet_proto'], timeout: SYN_SEEN_SECONDS, size: 262144 });
});

t.test('panic: when most firewalls look down at once, the last good membership is kept, minus links that are down', async (t) => {
  const c = cfg(false, { health: { target: '203.0.113.1', panicThreshold: 0.5 } });
  let now = 0;
  const m = new Membership(c, false, () => now);
  m.setHealth('fw3', false, 'timeout');
  now = 100_000;
  t.same(m.snapshot().live, ['fw1', 'fw2'], 'one of three down: believed');
  t.equal(m.snapshot().panic, null);
  m.setHealth('fw1', false, 'timeout');
  m.setHealth('fw2', false, 'timeout');
  const s = m.snapshot();
  t.same(s.live, ['fw1', 'fw2'], 'all three down at once: the last good membership holds');
  t.match(s.panic, /only 0 of 3 firewalls look up/);
  t.same(m.ownView(), { fw1: true, fw2: true, fw3: false }, 'and is what the node publishes');
  m.setLink('fw2', false);
  t.same(m.snapshot().live, ['fw1'], 'a link that goes down during panic leaves the table');
  m.setAdmin('fw1', false);
  t.same(m.snapshot().live, [], 'so does an administrative disable');
  m.setAdmin('fw1', true);
  m.setLink('fw2', true);
  m.setHealth('fw1', true, 'ok');
  m.setHealth('fw2', true, 'ok');
  t.same(m.snapshot(), { live: ['fw1', 'fw2'], restorable: ['fw1', 'fw2'], suspect: ['fw3'], agreement: null, panic: null }, 'enough are back: believed again');
  const off = new Membership(cfg(false, { health: { target: '203.0.113.1', panicThreshold: 0 } }));
  for (const id of ['fw1', 'fw2', 'fw3']) off.setHealth(id, false, 'timeout');
  t.same(off.snapshot().live, [], 'threshold 0: no panic mode');
  // Jittered monitors take the firewalls down one after the other: within one detection time it is one burst.
  now = 0;
  const b = new Membership(c, false, () => now);
  b.setHealth('fw1', false, 'timeout');
  t.same(b.snapshot().live, ['fw2', 'fw3'], 'the first of the burst looks like a single failure');
  now = 300;
  b.setHealth('fw2', false, 'timeout');
  t.same(b.snapshot().live, ['fw1', 'fw2', 'fw3'], 'the second tips it into panic, and the first is kept too (same burst)');
});

t.test('the latency of the last answered check is kept beside the state', async (t) => {
  const m = new Membership(cfg(false));
  m.setLatency('fw1', 0.7);
  t.equal(m.views()[0].health!.latencyMs, 0.7);
  m.setHealth('fw1', false, 'timeout');
  m.setLatency('fw1', 1.2);
  t.match(m.views()[0].health, { reason: 'timeout', latencyMs: 1.2 });
});

t.test('render, shared transit segment (issue 10): learning and the input mark tell firewalls apart by MAC on one interface', async (t) => {
  const c = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'sd0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.0.${10 + k}`, interface: 'tr0', mac: `02:FB:01:00:00:0${k}` })),
    hash: { seed: 42 },
  });
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  const macOf = (r: unknown) => JSON.stringify(r).match(/"field":"saddr"\}\},"right":"([0-9a-f:]+)"/)?.[1];
  t.same([1, 2, 3].map((k) => macOf(out.labeled[`learn:fw${k}`])), ['02:fb:01:00:00:01', '02:fb:01:00:00:02', '02:fb:01:00:00:03'], 'each learn rule matches its firewall\'s MAC (lower case)');
  const input_ = out.chains.find((x) => x.name === 'input')!;
  t.same(input_.rules.map(macOf), ['02:fb:01:00:00:01', '02:fb:01:00:00:02', '02:fb:01:00:00:03'], 'so does the mark for this node\'s own replies');
  t.ok(input_.rules.every((r) => JSON.stringify(r).includes('"right":"tr0"')), 'on the shared interface');
});

t.test('a node that lost the link to every firewall abstains from the shared view (issue 10)', async (t) => {
  const m = new Membership(cfg(true));
  t.same(m.ownView(), { fw1: true, fw2: true, fw3: true });
  m.setLink('fw1', false);
  m.setLink('fw2', false);
  t.same(m.ownView(), { fw1: false, fw2: false, fw3: true }, 'some links down: a view like any other');
  m.setLink('fw3', false);
  t.same(m.ownView(), {}, 'every link down: an empty view');
  m.setLink('fw3', true);
  t.same(m.ownView(), { fw1: false, fw2: false, fw3: true }, 'a link back (no health checks: nothing to settle): it votes again');
});

t.test('after every link came back, a node abstains until its probes had time to rise (issue 10)', async (t) => {
  let now = 0;
  // interval 200 ms, rise 2: the settle window is (2 + 2) x 200 = 800 ms.
  const m = new Membership(cfg(true, { health: { target: '198.51.100.1', panicThreshold: 0, timers: { interval: 200, response: 100, retries: 3, rise: 2 } } }), true, () => now);
  for (const id of ['fw1', 'fw2', 'fw3']) m.setLink(id, false);
  for (const id of ['fw1', 'fw2', 'fw3']) m.setHealth(id, false, 'own link down');
  now = 5000;
  m.setLink('fw1', true);
  m.setHealth('fw1', true);
  t.same(m.ownView(), {}, 'links back, probes rising: still an abstention (fw2 and fw3 would be vetoed)');
  now = 5799;
  t.same(m.ownView(), {}, 'until the window ends');
  now = 5800;
  m.setLink('fw2', true);
  t.same(m.ownView(), { fw1: true, fw2: false, fw3: false }, 'then the view is what the probes say');
});
