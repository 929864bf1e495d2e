// Firewall health: one monitor per firewall probing the twin node through that firewall (marked probes),
// plus this node's own link to it; transitions move buckets through the reconciler. Shell layer of apps/balancer.
import { readFileSync } from 'node:fs';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { anyOf, ContentMatcher, createChecker, HealthMonitor, helperAlarms, ProbeHelper, ProbeResult } from '@fwlb/health';
import type { Membership } from './membership';
import { slots } from './membership';

/** This node's own link: a firewall whose interface is down is down at once, without waiting for retries. */
export function linkProblem(ifname: string): string | null {
  try {
    const state = readFileSync(`/sys/class/net/${ifname}/operstate`, 'utf8').trim();
    return state === 'up' || state === 'unknown' ? null : `own link ${ifname} is ${state}`;
  } catch {
    return `own link ${ifname} does not exist`;
  }
}

export interface FirewallHealthHooks {
  /** Ask for a reconcile soon. */
  trigger: () => void;
  log: (m: string, fields?: Record<string, unknown>) => void;
  /** This node's whole view after every change, for the shared health views (layer 2). */
  onView?: (view: Record<string, boolean>) => void;
  /** Every check's result (metrics). */
  onResult?: (firewall: string, r: ProbeResult) => void;
}

export function startFirewallHealth(
  config: ResolvedBalancerConfig,
  membership: Membership,
  { trigger, log, onView, onResult }: FirewallHealthHooks,
): { stop(): void; alarms(): string[]; helperUp(): boolean } | null {
  const h = config.health;
  if (!h) return null;
  const helper = ProbeHelper.start(undefined, undefined, {
    onStatus: (s) => log(s.up ? `probe helper up (${s.restarts} restarts)` : `ALARM probe helper down: ${s.lastError}; firewall health holds its last state`),
  });
  // An http-content regex runs in a worker thread, never on the thread that answers the API and reconciles.
  const content = new ContentMatcher({ log });
  const monitors = slots(config).map((s) => {
    const fw = config.firewalls[s.index];
    const checker = createChecker({ ...h.check, mark: s.mark }, helper, { matcher: content, owner: `firewall ${fw.id}` });
    const m = new HealthMonitor({
      name: fw.id,
      // Several targets (the other side's nodes): the firewall is up while any of them answers through it.
      checker: h.targets.length > 1 ? anyOf(checker, h.targets) : checker,
      target: { address: h.targets[0] },
      timers: h.timers,
      precheck: () => {
        const p = linkProblem(fw.interface);
        // The kernel deleted this firewall's routes when the link went down; put them back as soon as it is up.
        // A link that goes down also ends the restore of its flows at once (they are re-hashed, not black-holed).
        // On a shared transit segment the link is the same for every firewall on it: they change together,
        // so a node that lost its only link abstains at once instead of vetoing the firewalls one by one.
        let changed = false;
        for (const f of config.firewalls) if (f.interface === fw.interface) changed = membership.setLink(f.id, p === null) || changed;
        if (changed) trigger();
        return p;
      },
      onResult: (id, res) => {
        if (res.ok && res.latencyMs !== undefined) membership.setLatency(id, res.latencyMs);
        onResult?.(id, res);
      },
      onEvent: (id, ev) => {
        log(`firewall ${id} ${ev.to.toUpperCase()}: ${ev.reason}`, {
          event: 'firewall-health',
          firewall: id,
          from: ev.from,
          to: ev.to,
          reason: ev.reason,
          ...(ev.latencyMs !== undefined ? { latencyMs: ev.latencyMs } : {}),
        });
        const wasPanic = membership.snapshot().panic;
        membership.setHealth(id, ev.to === 'up', ev.reason, ev.latencyMs);
        const panic = membership.snapshot().panic;
        if (panic && !wasPanic) log(`ALARM ${panic}`);
        if (!panic && wasPanic) log('panic over: the probes are believed again');
        onView?.(membership.ownView());
        trigger();
      },
    });
    m.start();
    return m;
  });
  return {
    alarms: () => [...helperAlarms(helper), ...content.alarms()],
    helperUp: () => helper.status().up,
    stop() {
      for (const m of monitors) m.stop();
      helper.close();
      content.close();
    },
  };
}
