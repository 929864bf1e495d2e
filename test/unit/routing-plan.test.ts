// Unit: policy routing plan touches only owned ranges and is idempotent.
import { t } from 'tap';
import { planRouting, planIsEmpty, touchesOwned, PolicyRoute } from '@fwlb/routing';

const owned = { tables: { base: 1000, size: 16 }, priorities: { base: 10000, size: 16 } };
const want: PolicyRoute[] = [
  { fwmark: 256, table: 1000, priority: 10000, gateway: '172.16.1.2', oif: 'fw1' },
  { fwmark: 257, table: 1001, priority: 10001, gateway: '172.16.2.2', oif: 'fw2' },
];

t.test('empty kernel: adds every rule and route', async (t) => {
  const p = planRouting(
    want,
    [
      { priority: 0, table: 255 },
      { priority: 32766, table: 254 },
    ],
    [],
    owned,
  );
  t.equal(p.addRules.length, 2);
  t.equal(p.setRoutes.length, 2);
  t.same(p.delRules, []);
});

t.test('matching kernel: nothing to do', async (t) => {
  const rules = want.map((w) => ({ priority: w.priority, fwmark: w.fwmark, fwmask: 0xffffffff, table: w.table }));
  const routes = want.map((w) => ({ table: w.table, dstLen: 0, gateway: w.gateway, oif: w.oif }));
  t.ok(planIsEmpty(planRouting(want, rules, routes, owned)));
});

t.test('foreign rules and tables are never touched; stale owned ones are removed', async (t) => {
  const rules = [
    { priority: 100, fwmark: 256, table: 1000 },
    { priority: 10005, fwmark: 999, table: 1005 },
  ];
  const routes = [
    { table: 254, dstLen: 0, gateway: '10.0.0.1', oif: 'eth0' },
    { table: 1005, dstLen: 0, gateway: '172.16.9.2', oif: 'fw9' },
    { table: 1000, dstLen: 0, gateway: '172.16.7.2', oif: 'fw1' },
  ];
  const p = planRouting(want, rules, routes, owned);
  t.same(
    p.delRules.map((r) => r.priority),
    [10005],
  );
  t.same(
    p.delRoutes.map((r) => r.table),
    [1005],
  );
  t.same(
    p.setRoutes.map((r) => `${r.table} ${r.gateway}`),
    ['1000 172.16.1.2', '1001 172.16.2.2'],
  );
});

t.test('IPv6 rules and tables are planned on their own: the same numbers, another family', async (t) => {
  const v6: PolicyRoute[] = want.map((w, i) => ({ ...w, family: 6, gateway: `2001:db8:${i + 1}::2` }));
  const rules4 = want.map((w) => ({ priority: w.priority, fwmark: w.fwmark, fwmask: 0xffffffff, table: w.table }));
  const routes4 = want.map((w) => ({ table: w.table, dstLen: 0, gateway: w.gateway, oif: w.oif }));
  const p = planRouting([...want, ...v6], rules4, routes4, owned);
  t.same(p.delRules, [], 'the IPv4 rules stay');
  t.same(
    p.addRules.map((r) => `${r.family} ${r.priority} ${r.table}`),
    ['6 10000 1000', '6 10001 1001'],
    'IPv6 rules are added beside them',
  );
  t.same(
    p.setRoutes.map((r) => `${r.family} ${r.table} ${r.gateway}`),
    ['6 1000 2001:db8:1::2', '6 1001 2001:db8:2::2'],
  );
  const rules6 = rules4.map((r) => ({ ...r, family: 6 as const }));
  const routes6 = v6.map((w) => ({ family: 6 as const, table: w.table, dstLen: 0, gateway: w.gateway, oif: w.oif }));
  t.ok(planIsEmpty(planRouting([...want, ...v6], [...rules4, ...rules6], [...routes4, ...routes6], owned)), 'both in place: nothing to do');
  const gone = planRouting(want, [...rules4, ...rules6], [...routes4, ...routes6], owned);
  t.same(
    gone.delRules.map((r) => `${r.family} ${r.priority}`),
    ['6 10000', '6 10001'],
    'IPv6 taken out of the config: its rules go, IPv4 ones stay',
  );
  t.same(
    gone.delRoutes.map((r) => `${r.family} ${r.table}`),
    ['6 1000', '6 1001'],
  );
});

t.test('kernel notices: a link change or a change in the owned ranges needs a pass, a change elsewhere does not', async (t) => {
  t.ok(touchesOwned({ kind: 'link' }, owned), 'a link (its IPv4 routes may be gone without a notice of their own)');
  t.ok(touchesOwned({ kind: 'route', family: 4, table: 1000 }, owned), 'the first owned table');
  t.ok(touchesOwned({ kind: 'route', family: 6, table: 1015 }, owned), 'the last owned table, IPv6');
  t.notOk(touchesOwned({ kind: 'route', family: 4, table: 1016 }, owned), 'past the owned tables');
  t.notOk(touchesOwned({ kind: 'route', family: 4, table: 254 }, owned), 'the main table (a routing daemon churns it)');
  t.ok(touchesOwned({ kind: 'rule', family: 4, priority: 10003 }, owned), 'an owned rule priority');
  t.notOk(touchesOwned({ kind: 'rule', family: 6, priority: 32766 }, owned), "the main table's rule");
  t.notOk(touchesOwned({ kind: 'address', address: '192.0.2.1' }, owned), 'an address: the SLB looks at those, not the balancer');
});
