// Unit: both agents' /metrics (through app.inject, over fakes) pass `promtool check metrics` and move with the state.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { validateBalancerConfig } from '@fwlb/config';
import { balancerMetrics, build, Reconciler, RoutingPort } from '@fwlb/balancer';
import { slbMetrics } from '@fwlb/slb';
import { gunzipSync } from 'node:zlib';
import Fastify from 'fastify';
import { Gauge, metricsRoute, newRegistry, Registry } from '@fwlb/service';
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
  let lists = 0;
  const firewalls = r.firewalls.bind(r);
  r.firewalls = () => (lists++, firewalls());
  const before = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(lists, 1, 'a scrape lists the firewalls once, for all its metric families');
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
  // As the agent wires it: the member walk runs ahead of each render.
  metricsRoute(app, reg, slbMetrics(reg, s).walk);
  const m11 = monitors.get([...monitors.keys()].find((k) => k.includes('10.20.0.11'))!)!;
  m11.emit(false);
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
  m11.emit(true);
  await s.reconcile();
  const back = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.equal(value(back, 'fwlb_member_up{vip="web",member="10.20.0.11:8080"}'), 1, 'the next scrape walks the members again');
});

t.test('a large render goes gzipped to a scraper that accepts it, as it is to one that does not', async (t) => {
  const app = Fastify();
  const reg = new Registry();
  const g = new Gauge({ name: 'fwlb_test_series', help: 'many series', labelNames: ['k'], registers: [reg] });
  for (let i = 0; i < 8000; i++) g.set({ k: `member-${i}-padding-to-make-the-render-large` }, i);
  metricsRoute(app, reg);
  const plain = await app.inject({ method: 'GET', url: '/metrics' });
  t.ok(plain.rawPayload.length > 256 * 1024, `the render is large (${plain.rawPayload.length} bytes)`);
  t.equal(plain.headers['content-encoding'], undefined);
  const zipped = await app.inject({ method: 'GET', url: '/metrics', headers: { 'accept-encoding': 'gzip, deflate' } });
  t.equal(zipped.headers['content-encoding'], 'gzip');
  t.ok(zipped.rawPayload.length < plain.rawPayload.length / 5, `compressed: ${zipped.rawPayload.length} bytes`);
  t.equal(gunzipSync(zipped.rawPayload).toString(), plain.body, 'the same text');
  const small = Fastify();
  metricsRoute(small, newRegistry());
  const smallZipped = await small.inject({ method: 'GET', url: '/metrics', headers: { 'accept-encoding': 'gzip' } });
  t.equal(smallZipped.headers['content-encoding'], undefined, 'a small render is sent as it is');
});

t.test('the render one metric at a time is the registry’s own text', async (t) => {
  const app = Fastify();
  const reg = new Registry();
  new Gauge({ name: 'fwlb_test_a', help: 'a', labelNames: ['k'], registers: [reg] }).set({ k: 'x' }, 1);
  new Gauge({ name: 'fwlb_test_b', help: 'b', registers: [reg] }).set(2);
  metricsRoute(app, reg);
  const served = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const own = await reg.metrics();
  t.equal(served, own, 'the same text');
  t.match(served, /^fwlb_test_a\{k="x"\} 1$/m);
});

t.test('a metric read from elsewhere renders as prom-client would: sums, last values, zeros, escapes, thousands of series', async (t) => {
  const { counterFrom, gaugeFrom } = await import('@fwlb/service');
  const reg = new Registry();
  const many = Array.from({ length: 2500 }, (_, i): [Record<string, string>, number] => [{ vip: `v${i % 7}`, member: `10.0.${i >> 8}.${i & 255}` }, i % 5]);
  counterFrom(reg, 'x_total', 'Sums \\ and\nnewlines.', ['vip', 'member'], () => [
    ...many,
    [{ vip: 'v0', member: '10.0.0.0' }, 3],
    [{ vip: 'odd "q"\\\n', member: 'm' }, 1],
    [{ vip: 'inf', member: 'm' }, Infinity],
  ]);
  gaugeFrom(reg, 'y', 'Last value wins.', ['vip'], () => [
    [{ vip: 'a' }, 1],
    [{ vip: 'a' }, 0],
    [{ vip: 'b' }, NaN],
    [{ vip: 'c' }, -2],
  ]);
  counterFrom(reg, 'z_total', 'Unlabelled, nothing read.', [], () => []);
  gaugeFrom(reg, 'w', 'Unlabelled.', [], () => [[{}, 7]]);
  const app = Fastify();
  metricsRoute(app, reg);
  const ours = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  const theirs = await reg.metrics();
  const sorted = (s: string) => s.split('\n').filter(Boolean).sort();
  t.same(sorted(ours), sorted(theirs), "the same lines as prom-client's render");
  t.equal(value(ours, 'x_total{vip="v0",member="10.0.0.0"}'), 3, 'a counter read twice for one series is summed');
  t.equal(value(ours, 'y{vip="a"}'), 0, 'a gauge keeps the last value it was given');
  t.equal(promtool(ours).status, 0, `promtool check metrics: ${promtool(ours).stdout}`);
});

t.test('a reader that hands out the same label objects every scrape gets each scrape’s values, in every metric that uses them', async (t) => {
  const { counterFrom, gaugeFrom } = await import('@fwlb/service');
  const reg = new Registry();
  const labels = Array.from({ length: 1500 }, (_, i) => ({ vip: `v${i % 3}`, member: `10.0.${i >> 8}.${i & 255}` }));
  let round = 1;
  counterFrom(reg, 'p_total', 'Packets.', ['vip', 'member'], () => labels.map((l, i): [typeof l, number] => [l, i * round]));
  gaugeFrom(reg, 'up', 'Up.', ['vip', 'member'], () => labels.map((l, i): [typeof l, number] => [l, (i + round) % 2]));
  const app = Fastify();
  metricsRoute(app, reg);
  for (round = 1; round <= 3; round++) {
    const ours = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    t.same(ours.split('\n').filter(Boolean).sort(), (await reg.metrics()).split('\n').filter(Boolean).sort(), `round ${round}: prom-client's lines`);
    t.equal(value(ours, 'p_total{vip="v1",member="10.0.4.0"}'), 1024 * round);
    t.equal(value(ours, 'up{vip="v1",member="10.0.4.0"}'), (1024 + round) % 2);
  }
});
