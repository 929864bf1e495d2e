// Real-server health for the SLB: one libs/health monitor per (RIP, port, check, timers), on one shared probe helper; shell layer of libs/slb.
import { ContentMatcher, createChecker, HealthMonitor, ProbeHelper, ProbeResult } from '@fwlb/health';
import type { MonitorFactory } from './monitor-pool';

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
      onResult: onResult && ((_name, r) => onResult(r)),
      onEvent: (_name, ev) => onEvent(ev),
    });
    m.start();
    return m;
  };
}
