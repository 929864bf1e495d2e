// Real-server health for the SLB: one libs/health monitor per (RIP, port, check, timers), on one shared probe helper; shell layer of libs/slb.
import { ContentMatcher, createChecker, HealthMonitor, ProbeHelper, ProbeResult } from '@fwlb/health';
import type { MonitorFactory } from './monitor-pool';

/** Member checks start on this grid (see MonitorOptions.gridMs): at most 20 wakeups a second for any number of members. */
export const MEMBER_CHECK_GRID_MS = 100;

/** `content`: where http-content regexes run, charged to the VIP that first asked for the probe. */
export function memberMonitors(helper: ProbeHelper, onResult?: (r: ProbeResult) => void, content?: ContentMatcher): MonitorFactory {
  return (key, vip, member, initial, onEvent) => {
    const m = new HealthMonitor({
      name: key,
      checker: createChecker(vip.check, helper, content && { matcher: content, owner: `VIP ${vip.id}` }),
      target: { address: member.address, port: member.port },
      timers: vip.timers,
      initial,
      spread: true,
      gridMs: MEMBER_CHECK_GRID_MS,
      onResult: onResult && ((_name, r) => onResult(r)),
      onEvent: (_name, ev) => onEvent(ev),
    });
    m.start();
    return m;
  };
}
