// Unit: both agents' /metrics (through app.inject, over fakes) pass `promtool check metrics` and move with the state.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { validateBalancerConfig } from '@fwlb/config';
import { balancerMetrics, build, Reconciler, RoutingPort } from '@fwlb/balancer';
import { slbMetrics } from '@fwlb/slb';
import { metricsRoute, newRegistry } from '@fwlb/service';
import { recordingNft } from '../helpers/recording-nft';
import { setup, TOKEN, web } from '../helpers/slb-fixture';

const promtool = (text: string) => spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
const value = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1]);

t.test('balancer: promtool accepts /metrics; disabling fw2 moves the firewall gauges', async (t) => {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2, 3].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const r = new Reconciler(config, recordingNft(), routing);
  const app = build({ reconciler: r, token: TOKEN, audit: () => undefined, apply: () => r.reconcile() });
  const reg = newRegistry();
  const m = balancerMetrics(reg, { reconciler: r, alarms: () => [] });
  metricsRoute(app, reg);
  await r.reconcile();
  m.observeCheck('fw1', { ok: true, reason: 'echo reply', latencyMs: 0.4 });
  m.observeCheck('fw1', { ok: false, unknown: true, reason: 'probe helper unavailable' });
  const before = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const lint = promtool(before);
  t.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
  t.equal(value(before, 'fwlb_firewall_live{firewall="fw2"}'), 1);
  t.equal(value(before, 'fwlb_health_checks_total{firewall="fw1",result="unknown"}'), 1);
  t.equal(value(before, 'fwlb_reconciles_total{result="ok"}'), 1);
  t.match(before, /^process_cpu_seconds_total /m, 'process metrics too');
  await app.inject({ method: 'PUT', url: '/firewalls/fw2/admin', payload: { enabled: false }, headers: { authorization: `Bearer ${TOKEN}` } });
  const after = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(value(after, 'fwlb_firewall_live{firewall="fw2"}'), 0, 'fw2 no longer live');
  t.equal(value(after, 'fwlb_firewall_admin_enabled{firewall="fw2"}'), 0);
  t.equal(value(after, 'fwlb_firewall_buckets{firewall="fw2"}'), 0);
  t.equal(value(after, 'fwlb_reconciles_total{result="ok"}'), 2);
  t.equal(promtool(after).status, 0);
});

t.test('SLB: promtool accepts /metrics; member health is there per vip and member', async (t) => {
  const { s, app, monitors } = setup();
  await s.start();
  const reg = newRegistry();
  slbMetrics(reg, s);
  metricsRoute(app, reg);
  monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.11'))!)!.emit(false);
  await s.reconcile();
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const lint = promtool(text);
  t.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
  t.equal(value(text, 'fwlb_member_up{vip="web",member="10.20.0.11:8080"}'), 0);
  t.equal(value(text, 'fwlb_member_up{vip="web",member="10.20.0.12:8080"}'), 1);
  t.equal(value(text, 'fwlb_member_slots{vip="web",member="10.20.0.11:8080"}'), 0, 'the down member holds no slot');
  t.equal(value(text, 'fwlb_slb_vips'), 1);
  t.notMatch(text, /^fwlb_slb_pool_panic\{/m, 'no pool in panic: no series');
  await s.replaceVip('web', { ...web(), panicThreshold: 0.6 });
  await s.reconcile();
  const panic = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(value(panic, 'fwlb_slb_pool_panic{vip="web",pool=""}'), 1, 'one of two up is below 60 %: the L4 pool is in panic');
  t.equal(promtool(panic).status, 0);
});
