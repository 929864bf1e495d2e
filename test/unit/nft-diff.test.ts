// Unit: render + diff of the nft table against a fake kernel state (text dumps compared with expected text).
import { t } from 'tap';
import { validateBalancerConfig } from '@fwlb/config';
import { diffTable, parseListing, ruleDigest, ActualTable, DesiredTable } from '@fwlb/nft';
import { bucketTable, renderTable, renderRoutes, RenderInput } from '@fwlb/balancer';

const config = validateBalancerConfig({
  role: 'inside',
  sideInterface: 'srv0',
  firewalls: [
    { id: 'fw1', nextHop: '172.17.1.2', interface: 'fw1' },
    { id: 'fw2', nextHop: '172.17.2.2', interface: 'fw2', mac: '02:00:00:00:00:02' },
    { id: 'fw3', nextHop: '172.17.3.2', interface: 'fw3' },
  ],
  hash: { seed: 42, buckets: 7 },
  marks: { base: 256, size: 8 },
});

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
    namedCounters: new Map(),
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
  t.match(out, /^add table fwlb\nadd set heard\nadd set synseen\nadd set fresh\nadd map buckets\nadd element buckets \[\[0,\d+\],/);
  t.match(
    out,
    /add chain side-syn(\nadd rule side-syn){6}\nadd chain firewall-syn(\nadd rule firewall-syn){4}\nadd chain prerouting(\nadd rule prerouting){12}\nadd chain input(\nadd rule input){3}\nadd chain output\nadd rule output$/,
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
