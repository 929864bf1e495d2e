// The SLB tier's Prometheus metrics, read from the service's memory at scrape time (the counters come from the
// background read of the kernel's named counters); labels: vip, member (address:port). Shell layer of libs/slb.
import { counterFrom, gaugeFrom, Registry } from '@fwlb/service';
import { memberKey } from '@fwlb/config';
import type { ResolvedVip } from '@fwlb/config';
import type { SlbService } from './service';

type MemberRow = { labels: { vip: string; member: string }; m: ReturnType<SlbService['views']['memberView']>[number] };

/** VIPs walked between two turns of the event loop (8 members each in the bench: about 1 ms). */
const WALK_SLICE = 50;

/**
 * The members' rows for the families that read every member. Why a walk ahead of the render: five families read every
 * member, and at 1,000 VIPs × 8 members one walk in a single turn held the event loop for tens of milliseconds, which
 * every request meanwhile waited out; the walk yields every WALK_SLICE VIPs, and the families read what it found.
 */
function memberWalker(s: SlbService): { walk: () => Promise<void>; members: () => MemberRow[] } {
  // Each member's labels are one object for as long as its VIP's config stands, so the renderer escapes and joins
  // them once, not once per family and scrape.
  const labelsOf = new WeakMap<ResolvedVip, { vip: string; member: string }[]>();
  const labels = (v: ResolvedVip) => {
    let l = labelsOf.get(v);
    if (!l) labelsOf.set(v, (l = v.members.map((m) => ({ vip: v.id, member: memberKey(m) }))));
    return l;
  };
  const rows = (v: ResolvedVip): MemberRow[] => {
    const l = labels(v);
    return s.views.memberView(v).map((m, i) => ({ labels: l[i], m }));
  };
  // A walk serves the render it precedes (which yields too, so it may take longer than a turn); one the families
  // made themselves (a registry rendered without the route) serves for 100 ms.
  let walked: { until: number; list: MemberRow[] } | null = null;
  const walk = async (): Promise<void> => {
    const list: MemberRow[] = [];
    const vips = s.vips();
    for (let i = 0; i < vips.length; i++) {
      if (i && i % WALK_SLICE === 0) await new Promise((r) => setImmediate(r));
      for (const row of rows(vips[i])) list.push(row);
    }
    walked = { until: Date.now() + 2000, list };
  };
  const members = () => {
    const now = Date.now();
    if (!walked || now > walked.until) walked = { until: now + 100, list: s.vips().flatMap(rows) };
    return walked.list;
  };
  return { walk, members };
}

/** Registers the SLB's metrics; returns the walk to run before each render (metricsRoute's `refresh`, see memberWalker). */
export function slbMetrics(reg: Registry, s: SlbService): { walk: () => Promise<void> } {
  const { walk, members } = memberWalker(s);
  const b = (v: boolean) => (v ? 1 : 0);
  counterFrom(reg, 'fwlb_vip_new_sessions_total', 'New sessions to the VIP (DNATed or not).', ['vip'], () =>
    s.vips().map((v) => [{ vip: v.id }, s.views.vipNewSessions(v)]),
  );
  counterFrom(reg, 'fwlb_member_new_sessions_total', 'New sessions a member received.', ['vip', 'member'], () =>
    members().map((x) => [x.labels, x.m.counters.newSessions]),
  );
  counterFrom(reg, 'fwlb_member_packets_total', 'Packets of the member’s sessions, both directions.', ['vip', 'member'], () =>
    members().map((x) => [x.labels, x.m.counters.packets]),
  );
  counterFrom(reg, 'fwlb_member_bytes_total', 'Bytes of the member’s sessions, both directions.', ['vip', 'member'], () =>
    members().map((x) => [x.labels, x.m.counters.bytes]),
  );
  gaugeFrom(reg, 'fwlb_member_up', 'The member passes its health check (1).', ['vip', 'member'], () => members().map((x) => [x.labels, b(x.m.health.up)]));
  gaugeFrom(reg, 'fwlb_member_slots', 'Slots the member holds in its VIP’s DNAT map (0: takes no new session).', ['vip', 'member'], () =>
    members().map((x) => [x.labels, x.m.slots]),
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
  return { walk };
}
