// Unit: render + diff of the nft table against a fake kernel state (text dumps compared with expected text).
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { diffTable, parseListing, planTableChange, ruleDigest, ActualTable, DesiredTable } from '@fwlb/nft';
import { bucketTable, IPV4, LISTING_TRUST_MS, pinChanges, PinMaps, Reconciler, renderTable, renderRoutes, RenderInput } from '@fwlb/balancer';
import { fakeNft } from '../helpers/fake-nft';

const baseConfig = {
  role: 'inside',
  sideInterface: 'srv0',
  firewalls: [
    { id: 'fw1', nextHop: '172.17.1.2', interface: 'fw1' },
    { id: 'fw2', nextHop: '172.17.2.2', interface: 'fw2', mac: '02:00:00:00:00:02' },
    { id: 'fw3', nextHop: '172.17.3.2', interface: 'fw3' },
  ],
  hash: { seed: 42, buckets: 7 },
  marks: { base: 256, size: 8 },
};
const config = validateBalancerConfig(baseConfig);

const input = (live = ['fw1', 'fw2', 'fw3']): RenderInput => ({ config, live, restorable: ['fw1', 'fw2', 'fw3'] });
const render = (live?: string[]) => {
  const i = input(live);
  return renderTable(i, bucketTable(i));
};

/** What the kernel would hold after applying `want` (the fake's view). */
function applied(want: DesiredTable, handle = 5): ActualTable {
  return {
    handle,
    chains: new Map(
      want.chains.map((c) => [c.name, { type: c.type, hook: c.hook, prio: c.prio, policy: c.policy, handle: 1, ruleComments: c.rules.map(ruleDigest) }]),
    ),
    maps: new Map(want.maps.map((m) => [m.name, { type: m.type, map: m.map, elements: new Map(m.elements.map(([k, v]) => [JSON.stringify(k), v])) }])),
    sets: new Map((want.sets ?? []).map((x) => [x.name, { type: x.type, timeout: x.timeout }])),
    counters: new Map(),
    namedCounters: new Map((want.counters ?? []).map((n) => [n, { packets: 0, bytes: 0 }])),
  };
}

const text = (cmds: unknown[]) =>
  cmds
    .map((c: any) => {
      const verb = Object.keys(c)[0];
      const kind = Object.keys(c[verb])[0];
      const o = c[verb][kind];
      return `${verb} ${kind} ${o.name ?? o.chain ?? ''}${o.elem ? ' ' + JSON.stringify(o.elem) : ''}`.trim();
    })
    .join('\n');

t.test('empty kernel: one transaction creates table, map, chain and rules', async (t) => {
  const want = render();
  const out = text(diffTable(want, null));
  t.match(
    out,
    /^add table fwlb\nadd counter sent-fw1\nadd counter new-fw1\n(add counter \S+\n){4}add set heard\nadd set synseen\nadd set fresh\nadd map buckets\nadd element buckets \[\[0,\d+\],/,
  );
  t.match(
    out,
    /add chain side-syn(\nadd rule side-syn){6}\nadd chain fresh-start\nadd rule fresh-start\nadd chain firewall-syn(\nadd rule firewall-syn){4}\nadd chain prerouting(\nadd rule prerouting){19}\nadd chain input(\nadd rule input){3}\nadd chain output\nadd rule output$/,
  );
  t.notMatch(out, /flush|delete/);
});

t.test('same state: nothing to do (restart adopts without flushing)', async (t) => {
  const want = render();
  t.same(diffTable(want, applied(want)), []);
});

t.test('firewall leaves: only its buckets change, with delete + add', async (t) => {
  const before = render();
  const after = render(['fw1', 'fw3']);
  const cmds = diffTable(after, applied(before));
  const out = text(cmds);
  const bmap = new Map(before.maps[0].elements);
  const del = (cmds.find((c: any) => c.delete) as any).delete.element.elem as number[];
  t.ok(del.length > 0 && del.every((b) => bmap.get(b) === 257), 'deletes only fw2 (mark 257) buckets');
  t.notMatch(out, /add table|add chain/);
  t.notMatch(out, /flush|chain/, 'the rules do not change: fw2 stays reachable for its pinned flows');
});

t.test('inside node hashes destination first; learning matches the firewall MAC', async (t) => {
  const want = render();
  const rules = JSON.stringify(want.chains.find((c) => c.name === 'prerouting')!.rules);
  t.match(
    rules,
    /"concat":\[\{"payload":\{"protocol":"ip","field":"daddr"\}\},\{"payload":\{"protocol":"th","field":"dport"\}\},\{"payload":\{"protocol":"ip","field":"saddr"\}\}/,
  );
  t.match(rules, /"ether","field":"saddr"\}\},"right":"02:00:00:00:00:02"/);
});

t.test('no live firewall: drop instead of hashing', async (t) => {
  const want = render([]);
  t.same(want.maps[0].elements, []);
  t.ok(want.labeled['no-firewall-drop']);
  t.notOk(want.labeled['hash-tcp-udp']);
});

t.test('a map, set or counter no rule wants goes only in a change that rewrites no chain', async (t) => {
  // A switch pending: two rules per hashing rule, the next table in buckets_next.
  const i = input();
  const table = bucketTable(i);
  const pending = renderTable(i, table, { at: 5_000_000, table: bucketTable(input(['fw1', 'fw2'])) });
  t.ok(pending.maps.some((m) => m.name === 'buckets_next'));
  const done = renderTable(input(['fw1', 'fw2']), bucketTable(input(['fw1', 'fw2'])));
  const first = planTableChange(done, applied(pending));
  t.match(text(first.cmds), /flush chain prerouting/, 'the switch done: the hashing rules are rewritten');
  t.notMatch(text(first.cmds), /delete map buckets_next/, 'and buckets_next stays while a packet may still run the old rules');
  t.same(first.later, ['map buckets_next'], 'named as left for later');
  // The kernel after that change: the new rules, buckets_next still there.
  const after = applied(done);
  after.maps.set('buckets_next', applied(pending).maps.get('buckets_next')!);
  const second = planTableChange(done, after);
  t.equal(text(second.cmds), 'delete map buckets_next', 'the next change, which rewrites no chain, deletes it');
  t.same(second.later, []);

  // A firewall taken out of the config: its rules go at once, its counters and map elements after.
  const two = validateBalancerConfig({ ...baseConfig, firewalls: baseConfig.firewalls.slice(0, 2) });
  const i2: RenderInput = { config: two, live: ['fw1', 'fw2'], restorable: ['fw1', 'fw2'] };
  const smaller = renderTable(i2, bucketTable(i2));
  const cut = planTableChange(smaller, applied(render()));
  t.same(cut.later, ['counter sent-fw3', 'counter new-fw3'], "fw3's counters wait");
  t.match(text(cut.cmds), /delete element sent_counters \[258\]/, 'while the counter maps stop naming them at once');
});

t.test('a map of named counters: listed by name, compared by name', async (t) => {
  const a = parseListing({
    nftables: [
      { table: { family: 'inet', name: 'fwlb', handle: 9 } },
      { map: { family: 'inet', name: 'sent_counters', table: 'fwlb', type: 'mark', handle: 2, map: 'counter', elem: [[256, 'sent-fw1']] } },
    ],
  })!;
  t.same([...a.maps.get('sent_counters')!.elements], [['256', 'sent-fw1']]);
  const want = render();
  const have = applied(want);
  t.same(diffTable(want, have), [], 'the same names: nothing to change');
  have.maps.set('sent_counters', { type: 'mark', map: 'counter', elements: new Map([['256', 'sent-fw2']]) });
  t.match(text(diffTable(want, have)), /delete element sent_counters \[256\]\nadd element sent_counters \[\[256,"sent-fw1"\]/, 'another name: replaced');
});

t.test('routes: one rule and table per firewall', async (t) => {
  t.same(
    renderRoutes(config).map((r) => `${r.priority} fwmark ${r.fwmark} table ${r.table} via ${r.gateway} dev ${r.oif}`),
    [
      '10000 fwmark 256 table 1000 via 172.17.1.2 dev fw1',
      '10001 fwmark 257 table 1001 via 172.17.2.2 dev fw2',
      '10002 fwmark 258 table 1002 via 172.17.3.2 dev fw3',
    ],
  );
});

t.test('parseListing reads nft -j output', async (t) => {
  const a = parseListing({
    nftables: [
      { metainfo: {} },
      { table: { family: 'inet', name: 'fwlb', handle: 9 } },
      { chain: { family: 'inet', table: 'fwlb', name: 'prerouting', handle: 1, type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' } },
      {
        map: {
          family: 'inet',
          name: 'buckets',
          table: 'fwlb',
          type: 'mark',
          handle: 2,
          map: 'mark',
          elem: [
            [0, 256],
            [1, 257],
          ],
        },
      },
      { rule: { family: 'inet', table: 'fwlb', chain: 'prerouting', handle: 4, comment: 'fwlb:x', expr: [{ counter: { packets: 3, bytes: 180 } }] } },
    ],
  });
  t.equal(a!.handle, 9);
  t.same(
    [...a!.maps.get('buckets')!.elements],
    [
      ['0', 256],
      ['1', 257],
    ],
  );
  t.same(a!.chains.get('prerouting')!.ruleComments, ['fwlb:x']);
  t.same(a!.counters.get('fwlb:x'), { packets: 3, bytes: 180 });
  t.equal(parseListing({ nftables: [] }), null);
});

t.test('parseListing of a whole ruleset keeps one table: another table with the same object names is left out', async (t) => {
  const table = (family: string, name: string, handle: number, chainHandle: number) => [
    { table: { family, name, handle } },
    { chain: { family, table: name, name: 'prerouting', handle: chainHandle, type: 'filter', hook: 'prerouting', prio: 0, policy: 'accept' } },
    { map: { family, table: name, name: 'pins', type: 'mark', handle: chainHandle + 1, map: 'mark' } },
    { rule: { family, table: name, chain: 'prerouting', handle: chainHandle + 2, comment: `c-${name}`, expr: [] } },
  ];
  const json = { nftables: [{ metainfo: {} }, ...table('ip', 'fwlb', 3, 10), ...table('inet', 'fwlb', 7, 20), ...table('inet', 'other', 8, 30)] };
  const a = parseListing(json, { family: 'inet', name: 'fwlb' })!;
  t.equal(a.handle, 7);
  t.equal(a.chains.get('prerouting')!.handle, 20);
  t.same(a.chains.get('prerouting')!.ruleComments, ['c-fwlb'], 'only its own rules');
  t.equal(a.maps.get('pins')!.handle, 21, 'the map handle is kept');
  t.equal(a.maps.get('pins')!.elements.size, 0, 'a terse listing has no elements');
  t.equal(parseListing(json, { family: 'inet', name: 'absent' }), null);
});

t.test('pinChanges: what to add, give another firewall, and remove', async (t) => {
  const held = new Map([
    ['a', 1],
    ['b', 2],
    ['c', 3],
  ]);
  const want = new Map([
    ['a', 1],
    ['b', 9],
    ['d', 4],
  ]);
  const ch = pinChanges(held, want);
  t.same(ch.put, [
    ['b', 9],
    ['d', 4],
  ]);
  t.same([...ch.changed], ['b'], 'b is deleted before it is added again (nft refuses an existing key)');
  t.same(ch.remove, ['c']);
  t.same(pinChanges(want, want), { put: [], changed: new Set(), remove: [] }, 'nothing to do');
});

t.test('the pins maps: replaced inside the first transaction, then changed by difference, never listed', async (t) => {
  const withTable = validateBalancerConfig({ ...JSON.parse(JSON.stringify(baseConfig)), sessionTable: { url: 'redis://127.0.0.1:1' } });
  const nft = fakeNft();
  const unlisted: (ReadonlySet<string> | undefined)[] = [];
  const reading = { ...nft, read: (f: string, n: string, u?: ReadonlySet<string>) => (unlisted.push(u), nft.read(f, n)) };
  const r = new Reconciler(withTable, reading, { rules: async () => [], routes: async () => [], apply: async () => [] });
  const [m1, m2] = r.membership.slots.map((x) => x.mark);
  let want = new Map<string, number>([
    ['10.64.0.1:1024>203.0.113.1:80/6', m1],
    ['10.64.0.2:1024>203.0.113.1:80/6', m1],
  ]);
  r.usePins({ pins: () => want });
  const kernel = async () => [...(await nft.read('inet', 'fwlb'))!.maps.get('pins')!.elements].sort();
  const key = (id: string) => {
    const [o, rest] = id.split('>');
    const [oa, op] = o.split(':');
    const [ia, ip] = rest.split('/')[0].split(':');
    return JSON.stringify({ concat: [oa, Number(op), ia, Number(ip), 'tcp'] });
  };
  const expect = () => [...want].map(([id, m]) => [key(id), m]).sort();

  await r.reconcile();
  t.equal(nft.batches.length, 1, 'one transaction: the table with its pins');
  t.ok(
    nft.batches[0].some((c: any) => c.flush?.map?.name === 'pins'),
    'the pins map is flushed and filled inside it',
  );
  t.same(await kernel(), expect());
  t.same([...unlisted[0]!], ['pins'], 'the pins map is never listed');
  t.equal(r.pinCount(), 2);

  // A pin added, one given another firewall, one removed: the first two before the table's transaction, the last
  // after it; each by difference.
  want = new Map([
    ['10.64.0.1:1024>203.0.113.1:80/6', m2],
    ['10.64.0.3:1024>203.0.113.1:80/6', m1],
  ]);
  r.membership.setAdmin('fw3', false);
  const before = nft.batches.length;
  await r.reconcile();
  const batches = nft.batches.slice(before);
  t.equal(batches.length, 3, 'pins in, the table, pins out');
  t.same(
    batches[0].map((c: any) => Object.keys(c)[0] + ':' + ((c.add ?? c.delete).element.elem as unknown[]).length),
    ['delete:1', 'add:2'],
    'the changed pin is deleted and added again, the new one added',
  );
  t.ok(
    batches[1].some((c: any) => c.delete?.element?.name === 'buckets' || c.add?.element?.name === 'buckets'),
    'the table transaction moves buckets',
  );
  t.notOk(
    batches[1].some((c: any) => c.add?.element?.name === 'pins' || c.flush?.map),
    'and carries no pin',
  );
  t.same(
    batches[2].map((c: any) => Object.keys(c)[0]),
    ['delete'],
    'the pin no longer wanted goes after it',
  );
  t.same(await kernel(), expect());

  // A failed transaction: what the maps hold is no longer known, so the next pass replaces them.
  r.membership.setAdmin('fw3', true);
  nft.failNext();
  await t.rejects(r.reconcile());
  await r.reconcile();
  t.ok(
    nft.batches.at(-1)!.some((c: any) => c.flush?.map?.name === 'pins'),
    'replaced after the failure',
  );
  t.same(await kernel(), expect());
});

t.test('a pass that only writes pins does not list the table again while the last listing showed the table it wants', async (t) => {
  const withTable = validateBalancerConfig({ ...JSON.parse(JSON.stringify(baseConfig)), sessionTable: { url: 'redis://127.0.0.1:1' } });
  const nft = fakeNft();
  let reads = 0;
  const counting = { ...nft, read: (f: string, n: string) => (reads++, nft.read(f, n)) };
  let clock = 1_000_000;
  const r = new Reconciler(withTable, counting, { rules: async () => [], routes: async () => [], apply: async () => [] }, () => clock);
  const [m1, m2] = r.membership.slots.map((x) => x.mark);
  let want = new Map<string, number>([['10.64.0.1:1024>203.0.113.1:80/6', m1]]);
  r.usePins({ pins: () => want });
  const pinsInKernel = async () => (await nft.read('inet', 'fwlb'))!.maps.get('pins')!.elements.size;

  await r.reconcile();
  t.equal(reads, 2, 'the first pass lists the table, makes it, and reads it back');

  clock += 10;
  want = new Map([...want, ['10.64.0.2:1024>203.0.113.1:80/6', m2]]);
  const unlisted = await r.reconcile();
  t.equal(reads, 2, 'a pin added: the read back still vouches for the table, no listing');
  t.equal(unlisted.listed, false);
  t.equal(await pinsInKernel(), 2, 'and the pin is in the kernel');
  t.equal(r.ruleCounters().reconcilesUnlisted, 1, 'counted');

  clock += LISTING_TRUST_MS;
  await r.reconcile();
  t.equal(reads, 3, 'once the listing is older than the trust, the next pass lists the table again');

  clock += 10;
  r.membership.setAdmin('fw3', false);
  await r.reconcile();
  t.equal(reads, 4, 'a change of the table this node wants is listed first');
  clock += 10;
  want = new Map([...want, ['10.64.0.3:1024>203.0.113.1:80/6', m1]]);
  await r.reconcile();
  t.equal(reads, 5, 'it changed only map elements, which leaves the listing out of date: the next pass lists again');

  clock += 10;
  want = new Map([...want, ['10.64.0.4:1024>203.0.113.1:80/6', m2]]);
  nft.failNext();
  await t.rejects(r.reconcile(), 'a pin write fails in a pass that did not list');
  t.equal(reads, 5);
  await r.reconcile();
  t.equal(reads, 7, 'after a failed pass the kernel may hold anything: listed again (and the pins replaced, read back)');
  t.equal(await pinsInKernel(), 4);

  clock += 10;
  await r.freshCounters();
  t.equal(reads, 7, "the rules' counters of a listing younger than the trust are fresh enough");
  clock += LISTING_TRUST_MS;
  await r.freshCounters();
  t.equal(reads, 8, 'older: the table is listed for its counters');
});

t.test('the pins maps are known only while the table and maps keep the handles they had', async (t) => {
  const pm = new PinMaps(fakeNft());
  const fams = [IPV4];
  const table = (handle: number, pins: number | null): ActualTable => ({
    handle,
    chains: new Map(),
    maps: pins === null ? new Map() : new Map([['pins', { type: 'mark', map: 'mark', elements: new Map(), handle: pins }]]),
    sets: new Map(),
    counters: new Map(),
    namedCounters: new Map(),
  });
  pm.replaced(new Map([['10.64.0.1:1024>203.0.113.1:80/6', 256]]), fams);
  pm.observe(table(3, 7), fams);
  t.ok(pm.known, 'the first read after the replace gives the handles');
  pm.observe(table(3, 7), fams);
  t.ok(pm.known, 'the same handles: still known');
  pm.observe(table(3, 8), fams);
  t.notOk(pm.known, 'the map made again: not known');
  pm.replaced(new Map(), fams);
  pm.observe(table(3, 8), fams);
  pm.observe(table(4, 8), fams);
  t.notOk(pm.known, 'the table made again: not known');
  pm.replaced(new Map(), fams);
  pm.observe(table(4, null), fams);
  t.notOk(pm.known, 'the map gone: not known');
  pm.replaced(new Map(), fams);
  pm.observe(null, fams);
  t.notOk(pm.known, 'the table gone: not known');
});
