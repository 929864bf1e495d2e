// Unit: the alerting rules and the dashboard that ship in deploy/monitoring: promtool accepts the rules and fires
// each alert on its sample series, and every metric they read is one the agents export.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { validateBalancerConfig } from '@fwlb/config';
import { balancerMetrics, Reconciler, RoutingPort } from '@fwlb/balancer';
import { REPO } from '@fwlb/lab';
import { slbMetrics } from '@fwlb/slb';
import { newRegistry } from '@fwlb/service';
import { recordingNft } from '../helpers/recording-nft';
import { setup } from '../helpers/slb-fixture';

const DIR = join(REPO, 'deploy/monitoring');
const promtool = (...args: string[]) => spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8' });

/** Every metric name both agents export (a session table and a probe helper configured, so all of them). */
async function exported(): Promise<Set<string>> {
  const config = validateBalancerConfig({
    role: 'outside',
    sideInterface: 'cli0',
    firewalls: [1, 2].map((k) => ({ id: `fw${k}`, nextHop: `172.16.${k}.2`, interface: `fw${k}` })),
    hash: { seed: 7 },
  });
  const routing: RoutingPort = { rules: async () => [], routes: async () => [], apply: async () => [] };
  const balancer = newRegistry();
  balancerMetrics(balancer, { reconciler: new Reconciler(config, recordingNft(), routing), sync: () => ({}), alarms: () => [], helperUp: () => true });
  const slb = newRegistry();
  slbMetrics(slb, setup().s);
  const names = new Set<string>();
  for (const reg of [balancer, slb]) {
    for (const m of await reg.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const sfx of ['_bucket', '_sum', '_count']) names.add(`${m.name}${sfx}`);
    }
  }
  return names;
}

/** The metric names a PromQL expression reads (identifiers that start with fwlb_). */
const readsOf = (expr: string) => [...expr.matchAll(/\bfwlb_[a-z0-9_]+/g)].map((m) => m[0]);

t.test('promtool accepts the alerting rules and fires every alert in its tests', async (t) => {
  const check = promtool('check', 'rules', 'fwlb-alerts.yml');
  t.equal(check.status, 0, `promtool check rules: ${check.stdout}${check.stderr}`);
  const run = promtool('test', 'rules', 'fwlb-alerts.test.yml');
  t.equal(run.status, 0, `promtool test rules: ${run.stdout}${run.stderr}`);
  const rules = parse(readFileSync(join(DIR, 'fwlb-alerts.yml'), 'utf8')).groups.flatMap((g: any) => g.rules);
  const tests = parse(readFileSync(join(DIR, 'fwlb-alerts.test.yml'), 'utf8')).tests.flatMap((x: any) => x.alert_rule_test);
  for (const r of rules)
    t.ok(
      tests.some((x: any) => x.alertname === r.alert && x.exp_alerts.length > 0),
      `${r.alert} fires in a test`,
    );
  const wanted = [
    'FwlbFirewallDown',
    'FwlbPanic',
    'FwlbProbeHelperDown',
    'FwlbRedisDown',
    'FwlbHashConfigDiffers',
    'FwlbSessionSyncLag',
    'FwlbHaproxyDown',
    'FwlbMemberDown',
    'FwlbVipNoLiveMember',
  ];
  t.same(
    wanted.filter((a) => !rules.some((r: any) => r.alert === a)),
    [],
    'an alert for each condition an operator must hear of',
  );
});

t.test('the rules and the dashboard read only metrics the agents export', async (t) => {
  const names = await exported();
  const rules = parse(readFileSync(join(DIR, 'fwlb-alerts.yml'), 'utf8')).groups.flatMap((g: any) => g.rules);
  for (const r of rules)
    t.same(
      readsOf(r.expr).filter((n) => !names.has(n)),
      [],
      `${r.alert}: ${r.expr}`,
    );
  const dash = JSON.parse(readFileSync(join(DIR, 'fwlb-dashboard.json'), 'utf8'));
  t.ok(dash.panels.length >= 10, `${dash.panels.length} panels`);
  for (const p of dash.panels)
    for (const q of p.targets)
      t.same(
        readsOf(q.expr).filter((n) => !names.has(n)),
        [],
        `panel "${p.title}": ${q.expr}`,
      );
  t.same(new Set(dash.panels.map((p: any) => p.id)).size, dash.panels.length, 'panel ids are unique');
});
