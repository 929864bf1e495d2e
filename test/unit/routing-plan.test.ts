// Unit: policy routing plan touches only owned ranges and is idempotent.
import { t } from 'tap';
import { planRouting, planIsEmpty, PolicyRoute } from '@fwlb/routing';

const owned = { tables: { base: 1000, size: 16 }, priorities: { base: 10000, size: 16 } };
const want: PolicyRoute[] = [
  { fwmark: 256, table: 1000, priority: 10000, gateway: '172.16.1.2', oif: 'fw1' },
  { fwmark: 257, table: 1001, priority: 10001, gateway: '172.16.2.2', oif: 'fw2' },
];

t.test('empty kernel: adds every rule and route', async (t) => {
  const p = planRouting(want, [{ priority: 0, table: 255 }, { priority: 32766, table: 254 }], [], owned);
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
  t.same(p.delRules.map((r) => r.priority), [10005]);
  t.same(p.delRoutes.map((r) => r.table), [1005]);
  t.same(p.setRoutes.map((r) => `${r.table} ${r.gateway}`), ['1000 172.16.1.2', '1001 172.16.2.2']);
});
