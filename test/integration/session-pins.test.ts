// Integration: established sessions that sit off their bucket's firewall survive both nodes
// losing their state, through the pins loaded from the shared session table; without the table they break.
// And the two nodes' health views must agree before a firewall takes new sessions.
import { t } from 'tap';
import { drive, ECHO_PORT, inNs } from '@fwlb/lab';
import { startLab } from '../helpers/lab';
import { startRedisOnSocket } from '../helpers/redis';
import { firewallChanges } from '../helpers/sessions';

t.test('a firewall changes, then both nodes lose their state: 0 streams break', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: url });
  const r = await firewallChanges(lab, t, async () => {
    const st = await Promise.all((['outside', 'inside'] as const).map((role) => lab.api(role, 'GET', '/status')));
    const pins = st.map((s) => s.body.pins);
    t.ok(
      pins.every((p) => p > 0),
      `sessions off their bucket's firewall are pinned on both nodes: ${pins}`,
    );
  });
  t.equal(r.streams, 200, '200 long-lived streams ran');
  t.equal(r.broken, 0, 'no stream broke');
  t.equal(r.drops, 0, 'no firewall dropped a packet');
  const pinned = await lab.api('outside', 'GET', '/status');
  t.ok((pinned.body.counters.pinned?.packets ?? 0) > 0, `packets found their firewall through the pins: ${JSON.stringify(pinned.body.counters.pinned)}`);
});

t.test('the same without the session table breaks streams (the test can fail)', async (t) => {
  const lab = await startLab(t);
  const r = await firewallChanges(lab, t);
  t.comment(`without the session table: ${r.broken} of ${r.streams} streams broke, ${r.drops} firewall drops`);
  t.ok(r.broken > 0 && r.drops > 0, 'streams break and firewalls drop');
});

t.test('the nodes disagree about fw3: no asymmetric drop, fw3 takes no new session until both agree', async (t) => {
  const { url } = await startRedisOnSocket(t);
  const lab = await startLab(t, { sessionTable: url });
  // fw3 drops only the outside node's probes (echo requests to the inside node): ob sees fw3 down, ib sees it up.
  const fw3 = lab.ns('fw3');
  inNs(fw3, ['nft', 'add', 'table', 'ip', 'cut']);
  inNs(fw3, ['nft', 'add', 'chain', 'ip', 'cut', 'probecut', '{ type filter hook forward priority -10; }']);
  inNs(fw3, ['nft', 'add', 'rule', 'ip', 'cut', 'probecut', 'ip', 'daddr', lab.t.nodes.outside.health!.target!, 'icmp', 'type', 'echo-request', 'drop']);
  await lab.waitFirewalls((fw) => !fw.find((f) => f.id === 'fw3')!.live, 10000, 'fw3 out of the table on both nodes');
  const views = await Promise.all((['outside', 'inside'] as const).map((r) => lab.api(r, 'GET', '/firewalls')));
  t.same(
    views.map((v) => v.body.find((f: any) => f.id === 'fw3').healthy),
    [false, true],
    'ob sees fw3 down, ib sees it up',
  );
  lab.resetFirewallCounters();
  const clients = lab.t.hosts.filter((h) => h.role === 'client').map((c) => `${c.addr}:${ECHO_PORT}`);
  const [out, inb] = await Promise.all([
    Promise.all(['c1', 'c2'].map((c) => drive(lab, c, { short: { targets: [`${lab.t.vip}:${ECHO_PORT}`], count: 150, concurrency: 8 } }))),
    Promise.all(['s1', 's2', 's3'].map((s) => drive(lab, s, { short: { targets: clients, count: 100, concurrency: 8 } }))),
  ]);
  const failed = [...out, ...inb].reduce((n, r) => n + r.short.failed, 0);
  const fw = lab.firewallCounters();
  t.equal(failed, 0, '0 of 600 connections failed, client- and server-initiated');
  t.equal(
    fw.reduce((n, f) => n + f.drops, 0),
    0,
    'no asymmetric drop',
  );
  t.equal(fw.find((f) => f.id === 'fw3')!.newSessions, 0, 'fw3 took no new session');
  inNs(fw3, ['nft', 'delete', 'table', 'ip', 'cut']);
  const back = await lab.waitFirewalls((f) => f.every((x) => x.live), 10000, 'fw3 back on both nodes');
  lab.resetFirewallCounters();
  await drive(lab, 'c1', { short: { targets: [`${lab.t.vip}:${ECHO_PORT}`], count: 150, concurrency: 8 } });
  t.ok(lab.firewallCounters().find((f) => f.id === 'fw3')!.newSessions > 0, `once both agree (after ${back} ms), fw3 takes new sessions`);
});
