// The SLB tier's Prometheus metrics, read from the service's memory at scrape time (the counters come from the
// background read of the kernel's named counters); labels: vip, member (address:port). Shell layer of libs/slb.
import { counterFrom, gaugeFrom, Registry } from '@fwlb/service';
import { memberKey } from '@fwlb/config';
import type { SlbService } from './service';

export function slbMetrics(reg: Registry, s: SlbService): void {
  // One member walk per scrape, shared by the five member families (each family's collect runs in the same scrape):
  // at 8,000 members the walk was done five times.
  let walk: { at: number; list: { vip: string; member: string; m: ReturnType<SlbService['views']['memberView']>[number] }[] } | null = null;
  const members = () => {
    const now = Date.now();
    if (!walk || now - walk.at > 100)
      walk = { at: now, list: s.vips().flatMap((v) => s.views.memberView(v).map((m) => ({ vip: v.id, member: memberKey(m), m }))) };
    return walk.list;
  };
  const b = (v: boolean) => (v ? 1 : 0);
  counterFrom(reg, 'fwlb_vip_new_sessions_total', 'New sessions to the VIP (DNATed or not).', ['vip'], () =>
    s.vips().map((v) => [{ vip: v.id }, s.views.vipNewSessions(v)]),
  );
  counterFrom(reg, 'fwlb_member_new_sessions_total', 'New sessions a member received.', ['vip', 'member'], () =>
    members().map((x) => [{ vip: x.vip, member: x.member }, x.m.counters.newSessions]),
  );
  counterFrom(reg, 'fwlb_member_packets_total', 'Packets of the member’s sessions, both directions.', ['vip', 'member'], () =>
    members().map((x) => [{ vip: x.vip, member: x.member }, x.m.counters.packets]),
  );
  counterFrom(reg, 'fwlb_member_bytes_total', 'Bytes of the member’s sessions, both directions.', ['vip', 'member'], () =>
    members().map((x) => [{ vip: x.vip, member: x.member }, x.m.counters.bytes]),
  );
  gaugeFrom(reg, 'fwlb_member_up', 'The member passes its health check (1).', ['vip', 'member'], () =>
    members().map((x) => [{ vip: x.vip, member: x.member }, b(x.m.health.up)]),
  );
  gaugeFrom(reg, 'fwlb_member_slots', 'Slots the member holds in its VIP’s DNAT map (0: takes no new session).', ['vip', 'member'], () =>
    members().map((x) => [{ vip: x.vip, member: x.member }, x.m.slots]),
  );
  counterFrom(
    reg,
    'fwlb_member_checks_total',
    'Member health checks, by result (ok, failed, unknown: the probe could not run, the state held).',
    ['result'],
    () => Object.entries(s.checks).map(([result, n]) => [{ result }, n]),
  );
  gaugeFrom(reg, 'fwlb_slb_vips', 'VIPs configured.', [], () => [[{}, s.vips().length]]);
  const one = (v: boolean | null) => (v === null ? [] : [[{}, b(v)] as [Record<string, string>, number]]);
  gaugeFrom(reg, 'fwlb_slb_probe_helper_up', 'The SLB probe helper process (member checks) answers (1).', [], () => one(s.helperUp()));
  gaugeFrom(reg, 'fwlb_haproxy_up', 'HAProxy, which serves the L7 VIPs, runs (1); absent where HAProxy is not installed.', [], () => one(s.haproxyUp()));
  gaugeFrom(
    reg,
    'fwlb_slb_pool_panic',
    'Pools in panic (1): too few members up to believe the checks, every enabled member takes new sessions; pool is empty for an L4 VIP.',
    ['vip', 'pool'],
    () => s.poolPanics().map((p) => [{ vip: p.vip, pool: p.pool }, 1]),
  );
  gaugeFrom(reg, 'fwlb_slb_alarms', 'SLB alarms raised now (pool panic, helper down, state file).', [], () => [[{}, s.alarms().length]]);
  counterFrom(reg, 'fwlb_slb_reconciles_total', 'SLB reconcile passes, by result.', ['result'], () => [
    [{ result: 'ok' }, s.reconciles - s.failures],
    [{ result: 'failed' }, s.failures],
  ]);
}
