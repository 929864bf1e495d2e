// Unit: firewall membership (admin, own health, own link, agreement) → who takes new sessions, whose flows keep
// their firewall, and which firewalls are suspect; and how the render turns that into nft rules.
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { statementText } from '@fwlb/nft';
import { bucketTable, CONN_SECONDS, FRESH_SECONDS, Membership, renderTable, SYN_SEEN_SECONDS } from '@fwlb/balancer';

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
  type Case = {
    name: string;
    st: boolean;
    admin?: boolean;
    up?: boolean;
    link?: boolean;
    agreed?: { live: string[]; down: string[] };
    want: { live: boolean; restorable: boolean; suspect: boolean };
  };
  const cases: Case[] = [
    { name: 'disabled: no new sessions, established flows stay', st: false, admin: false, want: { live: false, restorable: true, suspect: false } },
    { name: 'probes fail, no session table: suspect (kept only while heard)', st: false, up: false, want: { live: false, restorable: false, suspect: true } },
    { name: 'link down: re-hashed at once', st: false, link: false, want: { live: false, restorable: false, suspect: false } },
    { name: 'link down even when probes still pass', st: false, up: true, link: false, want: { live: false, restorable: false, suspect: false } },
    {
      name: 'own probes fail, twin sees it up (agreement): flows keep it',
      st: true,
      up: false,
      agreed: { live: ['fw1', 'fw3'], down: [] },
      want: { live: false, restorable: true, suspect: false },
    },
    {
      name: 'every node sees it down: suspect',
      st: true,
      up: false,
      agreed: { live: ['fw1', 'fw3'], down: ['fw2'] },
      want: { live: false, restorable: false, suspect: true },
    },
    { name: 'session table but no epoch yet: own view decides', st: true, up: false, want: { live: false, restorable: false, suspect: true } },
    {
      name: 'own view up, not agreed: no new sessions, flows stay',
      st: true,
      agreed: { live: ['fw1', 'fw3'], down: [] },
      want: { live: false, restorable: true, suspect: false },
    },
  ];
  for (const c of cases) {
    const m = new Membership(cfg(c.st));
    if (c.admin !== undefined) m.setAdmin('fw2', c.admin);
    if (c.up !== undefined) m.setHealth('fw2', c.up, 'test');
    if (c.link !== undefined) m.setLink('fw2', c.link);
    if (c.agreed) m.setAgreement({ epoch: 1, ...c.agreed });
    const s = m.snapshot();
    t.same({ live: s.live.includes('fw2'), restorable: s.restorable.includes('fw2'), suspect: s.suspect.includes('fw2') }, c.want, c.name);
    t.same(
      s.live.filter((x) => x !== 'fw2'),
      ['fw1', 'fw3'],
      `${c.name}: the others are untouched`,
    );
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

/** The rendered table as nft text, one rule a line, by chain. */
function chainsText(out: ReturnType<typeof renderTable>): Record<string, string[]> {
  const by: Record<string, string[]> = {};
  for (const c of out.chains) by[c.name] = c.rules.map((r) => r.map(statementText).join(' '));
  return by;
}

t.test('render: restore by ct mark for restorable firewalls, restore-if-heard for suspect ones, the side label only on new flows', async (t) => {
  const c = cfg(true);
  const input = { config: c, live: ['fw1', 'fw3'], restorable: ['fw1', 'fw3'], suspect: ['fw2'] };
  const out = renderTable(input, bucketTable(input));
  const pre = chainsText(out).prerouting;
  const line = (label: string) => out.labeled[label].map(statementText).join(' ');
  t.match(line('restore'), /^meta iifname \S+ counter name ct mark map @sent_counters meta mark set ct mark accept$/, 'restore: the counter map is the match');
  t.same(
    out.maps.find((m) => m.name === 'sent_counters')!.elements,
    [
      [65536, 'sent-fw1'],
      [65538, 'sent-fw3'],
    ],
    "fw1 and fw3 only, each counted on its firewall's sent counter",
  );
  t.match(line('restore-heard'), /ct mark \{ 65537 \} .* @heard counter meta mark set ct mark accept/, 'restore-heard: fw2, looked up in @heard');
  const updates = pre.filter((r) => r.includes('update @heard'));
  t.equal(updates.length, 1, 'packets are remembered only from the suspect firewall');
  t.match(updates[0], /^meta iifname fw2 /);
  const all = Object.values(chainsText(out)).flat();
  const labels = all.filter((r) => r.includes('ct label set'));
  t.ok(labels.length >= 1 && labels.every((r) => /ct state in new ct label set/.test(r)), 'the side label is set only on a new entry');
  t.notMatch(line('hash-tcp-udp'), /label/, 'hashing (a re-hash of an established flow too) never labels');
  t.same(out.sets![0], { name: 'heard', type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service', 'inet_proto'], timeout: 30, size: 262144 });
  const none = renderTable({ ...input, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'], suspect: [] }, bucketTable(input));
  t.notOk(none.labeled['restore-heard'], 'no suspect firewall: no heard rule');
  // Without a session table nothing reads the label or the events: a new flow pays for neither.
  const plain = renderTable({ ...input, config: cfg(false) }, bucketTable(input));
  t.notMatch(JSON.stringify(plain.chains), /"label"|"event"/, 'no session table: no ct label, no ct event filter');
  t.match(JSON.stringify(out.chains), /"key":"event"/, 'with one: the event filter is there');
  t.notOk(
    Object.values(chainsText(none))
      .flat()
      .some((r) => r.includes('@heard')),
    'and nothing is remembered in @heard',
  );
});

t.test(
  'render, fast path: an established packet from the side is restored by the third rule, before any fib lookup; forwarded packets never meet a fib lookup',
  async (t) => {
    const c = cfg(true);
    const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
    const out = renderTable(input, bucketTable(input));
    const pre = chainsText(out).prerouting;
    t.match(
      pre[0],
      /^meta iifname srv0 meta l4proto tcp tcp flags in syn jump side-syn$/,
      'first, SYNs from the side go to their chain: any other packet fails the third comparison',
    );
    t.match(
      pre[1],
      /^meta iifname srv0 meta l4proto tcp meta nfproto ipv4 ct state in new,established .* @fresh delete @fresh/,
      'then a new connection that met an old entry (one set lookup)',
    );
    t.equal(pre[2], out.labeled.restore.map(statementText).join(' '), 'the third rule is the restore');
    const fib = pre.findIndex((r) => r.includes('fib'));
    t.ok(fib > 2, 'the fib lookup (traffic to this node) comes after it');
    t.equal(pre.filter((r) => r.includes('fib')).length, 1, 'one fib rule in prerouting');
    t.match(
      pre[3],
      /^meta iifname != srv0 meta l4proto tcp tcp flags & syn,fin,rst != 0 jump firewall-syn$/,
      'from a firewall, SYNs go to their chain, and FINs and RSTs (they end the conn records)',
    );
    t.equal(
      pre[4],
      'meta iifname != srv0 ct mark != 0 meta iifname . ct mark { fw1 . 65536, fw2 . 65537, fw3 . 65538 } accept',
      'and an established packet from the firewall its ct mark names leaves at the fifth rule (one set lookup)',
    );
    const relearn = [1, 2, 3].map((k) => pre.indexOf(out.labeled[`relearn:fw${k}`].map(statementText).join(' ')));
    t.ok(
      relearn.every((i) => i > 4) && pre[5] === 'meta iifname != srv0 ct mark != 0 meta l4proto tcp tcp flags & rst rst accept',
      'one from another firewall (a reset excepted) meets the per-firewall rules that move its flow after it',
    );
    t.same(
      [1, 2, 3].map((k) => statementText(out.labeled[`relearn:fw${k}`].at(-2))),
      ['ct mark set 65536', 'ct mark set 65537', 'ct mark set 65538'],
      'each to the firewall it came from',
    );
    t.equal(pre[Math.max(...relearn) + 1], 'meta iifname != srv0 ct mark != 0 accept', 'then any other packet with a ct mark leaves');
    const learn = pre.indexOf(out.labeled['learn:fw1'].map(statementText).join(' '));
    t.ok(learn > Math.max(...relearn), 'learning (ct mark 0) after them');
    const exit = pre.indexOf('meta iifname != srv0 accept');
    t.ok(exit > pre.indexOf(out.labeled['learn:fw3'].map(statementText).join(' ')), 'any other packet from a firewall leaves after the learn rules');
    t.ok(
      exit < pre.indexOf(out.labeled['hash-tcp-udp'].map(statementText).join(' ')) && exit < pre.indexOf(out.labeled.pinned.map(statementText).join(' ')),
      'before the side-only rules',
    );
    const input_ = out.chains.find((x) => x.name === 'input')!;
    t.equal(input_.hook, 'input', "the mark for this node's own replies is set on the input hook");
    t.notMatch(JSON.stringify(input_.rules), /fib/, 'without a fib lookup');
    t.same(
      input_.rules.map((r) => JSON.stringify(r).match(/"value":(\d+)/)?.[1]),
      ['65536', '65537', '65538'],
      'one mark per firewall',
    );
  },
);

t.test('render: a new connection never inherits the decision of an earlier one with the same tuple (a ct mark, a vouching SYN, a pin)', async (t) => {
  const c = cfg(true);
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  const ch = chainsText(out);
  // The handshake timeout rules head both SYN chains (handshake-timeouts.test.ts); the steering follows them.
  const steering = (rules: string[]) => {
    const n = rules.filter((r) => r.includes('ct timeout set')).length;
    t.ok(
      rules.slice(0, n).every((r) => r.includes('ct timeout set')),
      'the handshake timeout rules come first',
    );
    return rules.slice(n);
  };
  const syn = steering(ch['side-syn']);
  t.equal(syn[0], 'fib daddr type local return', 'traffic to this node itself is left alone');
  const vouch = syn.findIndex((r) => r.includes('@synseen'));
  t.match(
    syn[vouch],
    /^ct mark != 0 tcp flags in ack .* ct original ip saddr . ct original proto-src . ct original ip daddr . ct original proto-dst . ct protocol @synseen delete @synseen \{ .* \} return$/,
    "a SYN-ACK keeps its ct mark only if this node saw its SYN (by conntrack's original tuple, NAT or not), and uses that SYN up",
  );
  const hashSyn = syn.indexOf(out.labeled['hash-syn'].map(statementText).join(' '));
  t.equal(hashSyn, vouch + 1, 'every other SYN or SYN-ACK is hashed next (no ct mark, no pin)');
  t.match(syn[hashSyn], /^meta nfproto ipv4 counter meta mark set jhash .* ct mark set meta mark counter name meta mark map @new_counters$/);
  t.equal(
    syn[hashSyn + 1],
    'ct state in established,invalid meta nfproto ipv4 update @fresh { ip saddr . th sport . ip daddr . th dport . meta l4proto }',
    'one that met an earlier entry is remembered in @fresh (after the steering: a full set ends its rule)',
  );
  const record = syn.slice(hashSyn + 2, -1);
  t.same(
    record.map((r) => r.match(/^meta mark (\d+) /)?.[1]),
    ['65536', '65537', '65538'],
    'then recorded under the firewall it went to',
  );
  t.match(
    record[1],
    /^meta mark 65537 meta nfproto ipv4 delete @conn0 \{ ip saddr .* \} delete @conn2 \{ .* \} update @conn1 \{ ip saddr . th sport . ip daddr . th dport . meta l4proto \}$/,
    "in that firewall's conn set only",
  );
  t.equal(syn[syn.length - 1], 'accept', 'and accepted');
  const fw = steering(ch['firewall-syn']);
  t.equal(
    fw[0],
    'tcp flags & fin,rst != 0 ct state in new,established meta nfproto ipv4 delete @conn0 { ip daddr . th dport . ip saddr . th sport . meta l4proto } delete @conn1 { ip daddr . th dport . ip saddr . th sport . meta l4proto } delete @conn2 { ip daddr . th dport . ip saddr . th sport . meta l4proto } return',
    "a FIN or RST from a firewall ends this node's record of the connection's start, in every conn set, and goes on",
  );
  t.match(
    fw[2],
    /^meta iifname fw2 meta nfproto ipv4 delete @conn0 \{ ip daddr . th dport . ip saddr . th sport .* update @conn1 \{ ip daddr .* \}$/,
    "a SYN or SYN-ACK from a firewall is recorded under that firewall (the tuple in the side's order)",
  );
  t.match(
    fw[4],
    /^meta nfproto ipv4 ct state in invalid update @fresh \{ ip daddr . th dport . ip saddr . th sport . meta l4proto \} return$/,
    'one that conntrack refused: its replies take the decision into the entry they meet',
  );
  t.equal(fw[5], 'ct mark set 0', 'any other clears the mark, so learning takes the firewall it came from');
  t.match(fw[6], /^tcp flags & syn,ack syn .* update @synseen/, 'a bare SYN vouches for its SYN-ACK');
  const pre = ch.prerouting;
  const pinned = pre.indexOf(out.labeled.pinned.map(statementText).join(' '));
  const conns = ['fw1', 'fw2', 'fw3'].map((f) => pre.indexOf(out.labeled[`conn:${f}`].map(statementText).join(' ')));
  t.same(conns, [pinned - 3, pinned - 2, pinned - 1], 'a packet without a ct mark of a connection this node saw start follows its conn set, before any pin');
  t.match(
    pre[conns[0]],
    /^meta iifname srv0 meta l4proto tcp meta nfproto ipv4 ip saddr . th sport . ip daddr . th dport . meta l4proto @conn0 update @conn0 \{ .* \} counter meta mark set 65536 ct mark set meta mark accept$/,
  );
  t.ok(conns[0] > pre.indexOf(out.labeled.restore.map(statementText).join(' ')), 'after the restore: a packet with its ct mark pays nothing for them');
  t.same(
    out.sets!.map((x) => [x.name, x.timeout]),
    [
      ['heard', 30],
      ['synseen', SYN_SEEN_SECONDS],
      ['fresh', FRESH_SECONDS],
      ['conn0', CONN_SECONDS],
      ['conn1', CONN_SECONDS],
      ['conn2', CONN_SECONDS],
    ],
  );
  t.same(
    out.chains.map((x) => x.name),
    ['side-syn', 'fresh-start', 'firewall-syn', 'prerouting', 'input', 'output'],
    'the chains jumped to come first (one transaction adds them in order)',
  );
  const fresh = pre.findIndex((r) => r.includes('@fresh'));
  t.match(
    pre[fresh],
    /^meta iifname srv0 meta l4proto tcp meta nfproto ipv4 ct state in new,established ip saddr .* @fresh delete @fresh \{ .* \} jump fresh-start$/,
    'the next packet of a connection whose start met an entry goes to the fresh-start chain',
  );
  t.ok(fresh < pre.indexOf(out.labeled.restore.map(statementText).join(' ')), "before the restore could give it an earlier connection's mark");
  const start = ch['fresh-start'];
  t.same(
    start.map((r) => r.match(/@conn(\d)/)?.[1] ?? (r.includes('jhash') ? 'hash' : r)),
    ['0', '1', '2', 'hash'],
    "it follows where this node sent the connection's SYN or SYN-ACK (the conn sets), and the current table only without a record",
  );
  t.match(start[3], /^meta nfproto ipv4 meta mark set jhash .* ct mark set meta mark counter name meta mark map @new_counters accept$/);
  const spent = pre.findIndex((r) => r.includes('@synseen'));
  t.match(
    pre[spent],
    /^meta iifname != srv0 ct state in invalid meta l4proto tcp meta nfproto ipv4 ip saddr . th sport . ip daddr . th dport . meta l4proto @synseen delete @synseen \{ .* \}$/,
    "a packet from a firewall that conntrack refuses after the SYN (the SYN-ACK went through a sibling) uses the SYN's vouching up",
  );
  t.ok(spent > pre.findIndex((r) => r.startsWith('meta iifname != srv0 ct mark != 0 accept')), 'after the established packets from the firewalls have left');
  t.same(
    renderTable({ ...input, config: cfg(false) }, bucketTable(input)).chains.find((x) => x.name === 'fresh-start')!.rules.length,
    1,
    'without a session table the fresh-start chain has the current table alone',
  );
  const plain = renderTable({ ...input, config: cfg(false) }, bucketTable(input));
  t.notMatch(JSON.stringify(plain), /@conn/, 'without a session table (one node per side, which sees both directions) no conn sets');
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

t.test('render, without ingress learning: no flow moves to the firewall its packets come from', async (t) => {
  const c = cfg(true, { ingressLearning: false });
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  t.same(
    Object.keys(out.labeled).filter((l) => l.startsWith('relearn:') || l.startsWith('learn:')),
    [],
    'no learn or relearn rule',
  );
  t.notOk(
    chainsText(out).prerouting.some((r) => r.includes('meta iifname . ct mark')),
    'and no check of where a marked flow came from',
  );
  const on = renderTable({ ...input, config: cfg(true) }, bucketTable(input));
  t.same(
    Object.keys(on.labeled).filter((l) => l.startsWith('relearn:')),
    ['relearn:fw1', 'relearn:fw2', 'relearn:fw3'],
    'with learning (the default) one per firewall',
  );
});

t.test('render, shared transit segment: learning and the input mark tell firewalls apart by MAC on one interface', async (t) => {
  const c = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'sd0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.0.${10 + k}`, interface: 'tr0', mac: `02:FB:01:00:00:0${k}` })),
    hash: { seed: 42 },
  });
  const input = { config: c, live: ['fw1', 'fw2', 'fw3'], restorable: ['fw1', 'fw2', 'fw3'] };
  const out = renderTable(input, bucketTable(input));
  const macOf = (r: unknown) => JSON.stringify(r).match(/"field":"saddr"\}\},"right":"([0-9a-f:]+)"/)?.[1];
  t.same(
    [1, 2, 3].map((k) => macOf(out.labeled[`learn:fw${k}`])),
    ['02:fb:01:00:00:01', '02:fb:01:00:00:02', '02:fb:01:00:00:03'],
    "each learn rule matches its firewall's MAC (lower case)",
  );
  t.same(
    [1, 2, 3].map((k) => macOf(out.labeled[`relearn:fw${k}`])),
    ['02:fb:01:00:00:01', '02:fb:01:00:00:02', '02:fb:01:00:00:03'],
    'so does each rule that moves a flow to the firewall it came from',
  );
  t.match(
    chainsText(out).prerouting.join('\n'),
    /ct mark != 0 meta iifname \. ether saddr \. ct mark \{ tr0 \. 02:fb:01:00:00:01 \. 65536, tr0 \. 02:fb:01:00:00:02 \. 65537, tr0 \. 02:fb:01:00:00:03 \. 65538 \} accept/,
    "and the check that a packet came from its flow's firewall",
  );
  const input_ = out.chains.find((x) => x.name === 'input')!;
  t.same(input_.rules.map(macOf), ['02:fb:01:00:00:01', '02:fb:01:00:00:02', '02:fb:01:00:00:03'], "so does the mark for this node's own replies");
  t.ok(
    input_.rules.every((r) => JSON.stringify(r).includes('"right":"tr0"')),
    'on the shared interface',
  );
});

t.test('a node that lost the link to every firewall abstains from the shared view', async (t) => {
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

t.test('after every link came back, a node abstains until its probes had time to rise', async (t) => {
  let now = 0;
  // interval 200 ms, rise 2: the settle window is (2 + 2) x 200 = 800 ms.
  const m = new Membership(
    cfg(true, { health: { target: '198.51.100.1', panicThreshold: 0, timers: { interval: 200, response: 100, retries: 3, rise: 2 } } }),
    true,
    () => now,
  );
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

t.test('an admin change with a time: the wish at once, the table from its time on; the first time of the same change stands', async (t) => {
  let now = 1_000_000;
  const m = new Membership(cfg(true), true, () => now);
  m.setAdmin('fw2', false, 1_002_000);
  t.equal(m.isEnabled('fw2'), false, 'the wish is shown at once');
  t.same(m.adminState(), { fw1: true, fw2: false, fw3: true }, 'and saved');
  t.same(m.snapshot().live, ['fw1', 'fw2', 'fw3'], 'but fw2 takes new sessions until the time');
  t.same(m.snapshot(1_002_000).live, ['fw1', 'fw3'], 'and none from then on');
  t.equal(m.pendingAt(), 1_002_000);
  m.setAdmin('fw2', false, 1_005_000);
  t.equal(m.pendingAt(), 1_002_000, 'the same change again keeps its first time');
  now = 1_002_000;
  t.same(m.snapshot().live, ['fw1', 'fw3'], 'the time has come');
  t.equal(m.pendingAt(), null, 'nothing pending');
  m.setAdmin('fw2', true, 1_004_000);
  t.same(m.snapshot().live, ['fw1', 'fw3'], 'coming back waits for its time too');
  m.setAdmin('fw2', false);
  t.same([m.snapshot().live, m.pendingAt()], [['fw1', 'fw3'], null], 'a change back before the time cancels it (a failed apply rolls back this way)');
});

t.test('a shared change still to come keeps its time where the node holds the wish already without one (its state file)', async (t) => {
  let now = 1_000_000;
  const m = new Membership(cfg(true), true, () => now);
  m.setAdmin('fw2', false); // the state file of a node that read the change while it stopped: the wish, no time
  t.same(m.snapshot().live, ['fw1', 'fw3'], 'the state file alone takes fw2 out at once');
  t.equal(m.adoptShared('fw2', false, 1_002_000), true, 'the shared change brings its time');
  t.same(m.snapshot().live, ['fw1', 'fw2', 'fw3'], 'so fw2 takes new sessions until then, as on every other node');
  t.same(m.snapshot(1_002_000).live, ['fw1', 'fw3'], 'and none from then on');
  t.equal(m.adoptShared('fw2', false, 1_002_000), false, 'read again: nothing changes');
  now = 1_003_000;
  t.equal(m.adoptShared('fw2', false, 1_002_000), false, 'a change whose time has passed, held already: nothing changes');
  t.equal(m.adoptShared('fw2', true, 1_004_000), true, 'a change back');
  t.same(
    [m.snapshot().live, m.snapshot(1_004_000).live],
    [
      ['fw1', 'fw3'],
      ['fw1', 'fw2', 'fw3'],
    ],
    'at its own time',
  );
});

t.test('an agreed join takes effect at its time; the first agreement, and a leave, at once', async (t) => {
  let now = 1_000_000;
  const m = new Membership(cfg(true), true, () => now);
  m.setAgreement({ epoch: 1, live: ['fw1', 'fw3'], down: [], joinAt: 1_002_000 });
  t.same(m.snapshot().live, ['fw1', 'fw3'], 'the first agreement applies at once (there is nothing before it)');
  m.setAgreement({ epoch: 2, live: ['fw1', 'fw2', 'fw3'], down: [], joinAt: 1_002_000 });
  t.same(m.snapshot().live, ['fw1', 'fw3'], 'fw2 waits for its time');
  t.same(m.snapshot(1_002_000).live, ['fw1', 'fw2', 'fw3'], 'and joins then');
  t.equal(m.pendingAt(), 1_002_000);
  m.setAgreement({ epoch: 3, live: ['fw2', 'fw3'], down: [], joinAt: 1_002_000 });
  t.same(m.snapshot().live, ['fw3'], 'fw1 leaves at once, fw2 still waits');
  now = 1_002_000;
  t.same([m.snapshot().live, m.pendingAt()], [['fw2', 'fw3'], null]);
});
